"""Reference solutions to chapter 09's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

from course_lib.cluster import crc16


def transaction_keys(prefix, user_id):
    """One tag per user, `{user:<id>}`: a user's keys share a slot, different users spread out."""
    tag = "{user:%s}" % user_id
    return f"{prefix}{tag}:cart", f"{prefix}{tag}:orders", f"{prefix}{tag}:profile"


def slot_of(key):
    """CRC16 of the key's UTF-8 bytes modulo 16384: of the text between the first `{` and the next
    `}` when it is not empty, else of the whole key."""
    start = key.find("{")
    end = key.find("}", start + 1) if start != -1 else -1
    hashed = key[start + 1:end] if start != -1 and end > start + 1 else key
    return crc16(hashed.encode()) % 16384
