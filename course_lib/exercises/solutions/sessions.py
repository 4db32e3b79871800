"""Reference solutions to chapter 06's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

import json
import secrets


def session_id():
    """32 bytes from the OS's cryptographic generator, as 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def log_out_everywhere(client, prefix, user):
    """SMEMBERS the index, then one round trip: DEL every listed session (DEL counts only those that
    existed) and SREM exactly those ids. Not DEL of the index: an id another app server added after
    the SMEMBERS (a login meanwhile) stays listed, so its session is never orphaned. A crash between
    the two round trips changes nothing."""
    index = f"{prefix}user:{user}"
    ids = client.smembers(index)
    if not ids:
        return 0
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(*(f"{prefix}session:{i}" for i in ids))
        pipe.srem(index, *ids)
        deleted, _ = pipe.execute()
    return deleted


def sliding_read(client, session_key, idle):
    """GETEX key EX idle: the value and a fresh TTL in one atomic command."""
    raw = client.getex(session_key, ex=idle)
    return None if raw is None else json.loads(raw)
