"""Small patterns on the five core types: counters, profiles, capped logs, reliable queues, tags, leaderboards.

Every function takes a client (`redis.Redis`, `RedisCluster` or a pipeline where noted) and the key
names it works on, so the caller decides where data lives. Keys written, by the caller's names:

- counters: a string holding an integer (`increment`, `increment_unsafely`);
- profiles: a hash, one field per attribute (`save_profile`);
- activity logs: a list, newest entry first, capped (`log_activity`);
- job queues: two lists, pending and processing (`claim_job`, `ack_job`, `requeue_unacked`);
- tag index under a prefix `<index>`: `<index>:post:<post>:tags` and `<index>:tag:<tag>:posts`, sets;
- leaderboards: a sorted set, member -> points (`add_points`, `top`, `place`, `around`).

Cluster caveat for the multi-key patterns (queues, tag index): every key one command or transaction
touches must live in the same hash slot, so give those keys a common `{hash tag}`.
"""

from __future__ import annotations

from collections.abc import Mapping


# -- strings: counters ---------------------------------------------------------------------------

def increment(client, key: str, by: int = 1) -> int:
    """Add `by` to the counter at `key` and return the new value.

    Command: INCRBY. Atomic: the server reads, adds and writes in one step, so concurrent callers
    never lose an update. A missing key counts from 0.
    """
    return client.incrby(key, by)


def increment_unsafely(client, key: str, by: int = 1) -> int:
    """The broken counter: read the value, add in Python, write it back. Kept to show the race.

    Commands: GET then SET, two round trips. NOT atomic: two callers can read the same value and
    both write value+1, so one increment is lost. Use `increment` (INCRBY) instead.
    """
    value = int(client.get(key) or 0) + by
    client.set(key, value)
    return value


# -- hashes: profiles ----------------------------------------------------------------------------

def save_profile(client, key: str, fields: Mapping[str, object]) -> int:
    """Write some fields of the profile hash at `key`; fields not named are left as they are.

    Command: HSET with several field/value pairs. Atomic for all the fields given. Returns how many
    fields were new. Values are stored as strings (numbers come back as '42').
    """
    if not fields:
        raise ValueError("save_profile needs at least one field")
    return client.hset(key, mapping=dict(fields))


def load_profile(client, key: str) -> dict[str, str]:
    """The whole profile hash at `key` as a dict ({} when it does not exist).

    Command: HGETALL, O(number of fields). For a hash with thousands of fields prefer HGET/HMGET of
    the fields you need, or HSCAN.
    """
    return client.hgetall(key)


# -- lists: capped log and reliable queue ---------------------------------------------------------

def log_activity(client, key: str, entry: str, keep: int = 100) -> None:
    """Push `entry` to the front of the log at `key` and keep only the newest `keep` entries.

    Commands: LPUSH + LTRIM 0 keep-1 sent together in one MULTI/EXEC: one round trip, and no other
    client ever sees the log longer than `keep`. LTRIM costs O(entries removed), here one at a time.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(key, entry)
        pipe.ltrim(key, 0, keep - 1)
        pipe.execute()


def recent_activity(client, key: str, count: int = 10) -> list[str]:
    """The newest `count` entries of the log at `key`, newest first. Command: LRANGE 0 count-1."""
    return client.lrange(key, 0, count - 1)


def claim_job(client, queue: str, processing: str, timeout: float) -> str | None:
    """Take the oldest job from `queue` and park it in `processing` until it is acknowledged.

    Command: BLMOVE queue processing RIGHT LEFT timeout. Atomic: the job is never outside both
    lists, so a worker that dies after claiming leaves it in `processing` (see `requeue_unacked`)
    instead of losing it as RPOP would. Jobs are pushed with LPUSH, so RIGHT is the oldest.
    Blocks at most `timeout` seconds and returns None when nothing arrived.

    Cluster: `queue` and `processing` must share a hash tag. The client's socket timeout (5 s
    for `connect()`) must exceed `timeout`: redis-py does not add a blocking command's timeout to it.

    Raises:
        ValueError: `timeout` is not positive (BLMOVE with 0 would block forever).
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds (0 would block forever), got {timeout}")
    return client.blmove(queue, processing, timeout, "RIGHT", "LEFT")


def ack_job(client, processing: str, job: str) -> bool:
    """Mark `job` done by removing it from `processing`; False when it was not there.

    Command: LREM processing 1 job, O(length of processing), which stays short when workers ack.
    Jobs should be unique strings (e.g. carry an id), or LREM may remove a twin.
    """
    return client.lrem(processing, 1, job) == 1


def requeue_unacked(client, processing: str, queue: str) -> int:
    """Move every job left in `processing` back to the consumer end of `queue`; returns how many.

    Command: LMOVE processing queue LEFT RIGHT, one job per call, each move atomic. Taking the newest
    claim first and putting each at the consumer end keeps the jobs in their original order. Run it only
    when the workers that own `processing` are known to be dead (at start-up, or per worker with
    one processing list each), or a job still being worked on runs twice.
    """
    moved = 0
    while client.lmove(processing, queue, "LEFT", "RIGHT") is not None:
        moved += 1
    return moved


# -- sets: a tag index ---------------------------------------------------------------------------

def tag_post(client, index: str, post: str, *tags: str) -> int:
    """Tag `post` with `tags`, indexing both ways; returns how many tags were new to the post.

    Commands: SADD to `<index>:post:<post>:tags` and SADD of the post to each `<index>:tag:<tag>:posts`,
    in one MULTI/EXEC so the two directions never disagree. Duplicates are ignored by SADD.
    Cluster: put a hash tag in `index` (e.g. `course:data_types:{blog}`) so SINTER can combine sets.
    """
    if not tags:
        raise ValueError("tag_post needs at least one tag")
    with client.pipeline(transaction=True) as pipe:
        pipe.sadd(f"{index}:post:{post}:tags", *tags)
        for tag in tags:
            pipe.sadd(f"{index}:tag:{tag}:posts", post)
        return pipe.execute()[0]


def shared_tags(client, index: str, *posts: str) -> list[str]:
    """The tags every one of `posts` has, sorted. Command: SINTER of the posts' tag sets."""
    return sorted(client.sinter([f"{index}:post:{post}:tags" for post in posts]))


def posts_tagged(client, index: str, *tags: str) -> list[str]:
    """The posts carrying all of `tags`, sorted. Command: SINTER of the tags' post sets.

    SINTER costs O(N*M) in the worst case (N = smallest set, M = number of sets): cheap for tags,
    expensive for huge sets on a busy server.
    """
    return sorted(client.sinter([f"{index}:tag:{tag}:posts" for tag in tags]))


# -- sorted sets: a leaderboard ------------------------------------------------------------------

def add_points(client, board: str, member: str, points: float) -> float:
    """Add `points` to `member`'s score (a new member starts at 0) and return the new score.

    Command: ZINCRBY, O(log N), atomic: safe with many writers.
    """
    return client.zincrby(board, points, member)


def top(client, board: str, n: int = 10) -> list[tuple[str, float]]:
    """The `n` highest scores as (member, score), best first.

    Command: ZRANGE board 0 n-1 REV WITHSCORES, O(log N + n). Equal scores are ordered by member,
    and REV reverses that too: among ties, "zoe" comes before "amy". n = 0 returns [] without a
    command: its stop index would be -1, which ZRANGE reads as "to the end" (the whole board).
    """
    if n <= 0:
        return []
    return [(member, score) for member, score in client.zrange(board, 0, n - 1, desc=True, withscores=True)]


def place(client, board: str, member: str) -> int | None:
    """`member`'s place on the board, 1 for the best score; None when not on the board.

    Command: ZREVRANK (0-based, highest score first), O(log N).
    """
    rank = client.zrevrank(board, member)
    return None if rank is None else rank + 1


def around(client, board: str, member: str, radius: int = 2) -> list[tuple[int, str, float]]:
    """The entries around `member`: up to `radius` places above and below, as (place, member, score).

    Commands: ZREVRANK, then ZRANGE start stop REV WITHSCORES: two round trips, so a score that
    changes in between can shift the window by a place (harmless for display; use a Lua script if
    it must be exact). Returns [] when `member` is not on the board.
    """
    rank = client.zrevrank(board, member)
    if rank is None:
        return []
    start = max(0, rank - radius)
    entries = client.zrange(board, start, rank + radius, desc=True, withscores=True)
    return [(start + offset + 1, name, score) for offset, (name, score) in enumerate(entries)]
