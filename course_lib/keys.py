"""The course's key naming convention and its cleanup.

Every key the course writes is `course:<chapter>:<part>:<part>...`, so one chapter can delete
exactly its own keys (and never yours, if you point the course at a server you share).
Parts are joined with ':'; a part wrapped in braces, like `{user:42}`, is a cluster hash tag:
only that part decides the slot, so keys sharing it can be used together in one command.

Channels are named the same way, with one difference in a workshop room: keys live in the learner's
own database, but Pub/Sub channels belong to no database, so `channel` puts the learner's name in
them (`course:alice:<chapter>:...`), the channels the room lets alice use (`course_lib.seat`).
"""

from __future__ import annotations

from course_lib.seat import joined

PREFIX = "course"


def key(chapter: str, *parts: object) -> str:
    """`key("caching", "user", 42)` -> `"course:caching:user:42"`.

    Raises:
        ValueError: a part is empty or contains a space (such keys are legal but a typo waiting to happen).
    """
    pieces = [PREFIX, chapter, *map(str, parts)]
    for piece in pieces:
        if not piece or any(ch.isspace() for ch in piece):
            raise ValueError(f"key parts must be non-empty and without spaces, got {pieces!r}")
    return ":".join(pieces)


def channel(chapter: str, *parts: object) -> str:
    """`channel("streams", "news")` -> `"course:streams:news"`; `"course:alice:streams:news"` for a learner
    who joined a workshop room as alice (the join line is read when called).

    Raises:
        ValueError: as `key`, or the workshop's join line is unusable.
    """
    seat = joined()
    return key(seat.learner, chapter, *parts) if seat else key(chapter, *parts)


def hash_tag(*parts: object) -> str:
    """`hash_tag("user", 42)` -> `"{user:42}"`: the part of a key that picks its cluster slot."""
    return "{" + ":".join(map(str, parts)) + "}"


def delete_prefix(client, prefix: str, batch: int = 500) -> int:
    """Delete every key starting with `prefix`; returns how many were deleted.

    Commands: SCAN with MATCH and COUNT (incremental, never blocks the server like KEYS) and UNLINK
    (frees memory in the background). On a cluster redis-py's `scan_iter` walks every primary, since
    each holds only its own slots, and its `unlink` sends one UNLINK per slot. Not atomic: keys
    written while it runs may survive.
    """
    if not prefix or any(ch in prefix for ch in "*?[]\\"):
        raise ValueError(f"prefix must be a non-empty literal prefix such as 'course:caching:', got {prefix!r}")
    deleted = 0
    chunk: list[str] = []
    for name in client.scan_iter(match=prefix + "*", count=batch):
        chunk.append(name)
        if len(chunk) >= batch:
            deleted += client.unlink(*chunk)
            chunk = []
    if chunk:
        deleted += client.unlink(*chunk)
    return deleted
