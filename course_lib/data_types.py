"""Small patterns on the five core types: counters, profiles, capped logs, reliable queues, tags, leaderboards.

Every function takes a client (`redis.Redis`, `RedisCluster` or a pipeline where noted) and the key
names it works on, so the caller decides where data lives. Keys written, by the caller's names:

- counters: a string holding an integer (`increment`, `increment_unsafely`);
- profiles: a hash, one field per attribute (`save_profile`);
- activity logs: a list, newest entry first, capped (`log_activity`);
- job queues: two lists, pending and processing (`claim_job`, `ack_job`, `requeue_unacked`);
- tag index under a prefix `<index>`: `<index>:post:<post>:tags` and `<index>:tag:<tag>:posts`, sets;
- leaderboards: a sorted set, member -> points (`add_points`, `top`, `place`, `around`), and boards
  derived from it (`store_top`, `combine_boards`);
- draws: a set of entrants (`draw_winners`, `sample_members`);
- daily activity: one bitmap per day, bit = user id (`mark_active`, `count_active`, `combine_days`);
- unique visitors: one HyperLogLog per day (`count_visit`, `unique_visitors`);
- places: a geo index, a sorted set of geohashes (`add_places`, `places_near`).

Any key: `seconds_to_live` reads its expiry; `scan_collection` walks a hash, set or sorted set.

Cluster caveat for the multi-key patterns (queues, tag index): every key one command or transaction
touches must live in the same hash slot, so give those keys a common `{hash tag}`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


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


def store_top(client, board: str, dest: str, n: int) -> int:
    """Copy the `n` best entries of `board`, scores included, into the sorted set `dest`; returns how many.

    Command: ZRANGESTORE dest board 0 n-1 REV (Redis >= 6.2), one step on the server: the entries
    never travel to the client. `dest` is replaced (deleted when nothing is stored). n <= 0 stores
    nothing: its stop index -1 would mean the whole board. Cluster: both keys in one hash slot.
    """
    if n <= 0:
        client.delete(dest)
        return 0
    return client.zrangestore(dest, board, 0, n - 1, desc=True)


def combine_boards(client, dest: str, weights: Mapping[str, float], aggregate: str = "SUM") -> int:
    """Store in `dest` the union of the boards in `weights`, each score times its board's weight.

    Command: ZUNIONSTORE dest N board... WEIGHTS w... AGGREGATE SUM|MIN|MAX, one atomic step: a
    member on several boards gets the sum (or min, max) of its weighted scores. Returns the number of
    members in `dest`, which is replaced. Costs O(N) + O(M log M) over all members of all boards.
    Cluster: every board and `dest` in one hash slot.
    """
    if not weights:
        raise ValueError("combine_boards needs at least one board")
    return client.zunionstore(dest, dict(weights), aggregate=aggregate)


# -- any key: expiry, and walking a collection ----------------------------------------------------

def seconds_to_live(client, key: str) -> float | None:
    """How long `key` has left, in seconds (millisecond precision); None when it never expires.

    Command: PTTL. Its reply mixes times with two codes: -1 for a key without expiry and -2 for a
    missing key, so `ttl < 10` ("about to expire") is true for both. This function turns them into
    None and KeyError.

    Raises:
        KeyError: the key does not exist (or has just expired).
    """
    remaining = client.pttl(key)
    if remaining == -2:
        raise KeyError(key)
    return None if remaining == -1 else remaining / 1000


def scan_collection(client, key: str, match: str | None = None, count: int = 100) -> Iterator:
    """Walk the hash, set or sorted set at `key` a batch at a time, without blocking the server.

    Commands: TYPE, then HSCAN (yields (field, value)), SSCAN (members) or ZSCAN ((member, score)),
    each call returning about `count` elements and a cursor, until the cursor is 0 again. Unlike
    HGETALL/SMEMBERS/ZRANGE 0 -1, no single call costs O(N). Caveats: not atomic, so an element
    added or removed during the walk may or may not be returned, and one may be returned twice
    (dedupe if it matters); a small collection in its compact encoding (listpack, intset) comes back
    whole in one call, whatever `count`; MATCH filters after the elements are read, so a call can
    return nothing and the walk still goes on.

    Raises:
        TypeError: `key` holds another type (or does not exist).
    """
    kind = client.type(key)
    walkers = {"hash": client.hscan_iter, "set": client.sscan_iter, "zset": client.zscan_iter}
    if kind not in walkers:
        raise TypeError(f"{key} holds {kind!r}, not a hash, set or sorted set")
    return walkers[kind](key, match=match, count=count)


# -- sets: random draws --------------------------------------------------------------------------

def draw_winners(client, entrants: str, n: int) -> list[str]:
    """Remove `n` random members from the set `entrants` and return them (fewer if it holds fewer).

    Command: SPOP key count. Atomic: two app servers drawing at once never get the same member, and
    a drawn member is gone from the set (copy it first with COPY or SUNIONSTORE to keep the list).
    The choice is close to uniform, not a fair lottery: do not use it where fairness must be proven.
    """
    if n <= 0:
        return []
    return client.spop(entrants, n)


def sample_members(client, key: str, n: int, repeats: bool = False) -> list[str]:
    """`n` random members of the set at `key`, which stays as it is.

    Command: SRANDMEMBER key count. A positive count returns distinct members (at most the set's
    size); with `repeats` the count is sent negative and exactly `n` members come back, possibly the
    same one several times.
    """
    if n <= 0:
        return []
    return client.srandmember(key, -n if repeats else n)


# -- bitmaps: daily active users -----------------------------------------------------------------

def mark_active(client, day: str, user_id: int) -> bool:
    """Record that user `user_id` was active on the bitmap `day`; True when already recorded.

    Command: SETBIT day user_id 1, O(1), atomic. The bitmap is a string of user_id / 8 bytes at
    least: it suits small, dense integer ids (1, 2, 3...). A single id of 100,000,000 makes a 12.5 MB
    string, and the largest offset (2**32 - 1) allocates 512 MB, so map sparse ids to dense ones.
    """
    if user_id < 0:
        raise ValueError(f"user_id must be a non-negative integer, got {user_id}")
    return client.setbit(day, user_id, 1) == 1


def count_active(client, day: str) -> int:
    """How many users are recorded in the bitmap `day`. Command: BITCOUNT, O(size of the bitmap)."""
    return client.bitcount(day)


def combine_days(client, dest: str, operation: str, *days: str) -> int:
    """Store in `dest` the users active on every day (`operation` "AND") or on any day ("OR"); return how many.

    Commands: BITOP AND|OR dest day... then BITCOUNT dest, together in one MULTI/EXEC: one round
    trip, and no write to a day lands between the two. BITOP is O(length of the longest bitmap) and
    a missing day counts as all zeros (so AND with it is empty). Cluster: all keys in one hash slot.
    """
    if operation not in ("AND", "OR"):
        raise ValueError(f"operation must be 'AND' or 'OR', got {operation!r}")
    if not days:
        raise ValueError("combine_days needs at least one day")
    with client.pipeline(transaction=True) as pipe:
        pipe.bitop(operation, dest, *days)
        pipe.bitcount(dest)
        return pipe.execute()[1]


# -- HyperLogLog: unique visitors ----------------------------------------------------------------

def count_visit(client, counter: str, *visitors: str) -> bool:
    """Add `visitors` to the HyperLogLog `counter`; True when its estimate changed.

    Command: PFADD, O(1) per visitor, atomic. The counter never holds the visitors themselves, only
    registers derived from their hashes: about 12 KB per key at most, whatever the count, with a standard
    error of 0.81 %. It cannot list or remove a visitor; use a set when you need that.
    """
    if not visitors:
        raise ValueError("count_visit needs at least one visitor")
    return client.pfadd(counter, *visitors) == 1


def unique_visitors(client, *counters: str) -> int:
    """The estimated number of distinct visitors across `counters` (e.g. the 7 days of a week).

    Command: PFCOUNT counter..., which estimates the *union*: a visitor seen on several days counts
    once. Adding the days' separate counts would count returning visitors again. With several keys
    the server merges them on the fly (O(number of keys), heavier than one key); PFMERGE stores a
    merged counter for reuse. Cluster: all counters in one hash slot.
    """
    if not counters:
        raise ValueError("unique_visitors needs at least one counter")
    return client.pfcount(*counters)


# -- geospatial: places near a point -------------------------------------------------------------

def add_places(client, index: str, places: Mapping[str, tuple[float, float]]) -> int:
    """Add or move places, name -> (longitude, latitude), in the geo index `index`; returns how many were new.

    Command: GEOADD index lon lat name..., O(log N) each, atomic for all. Longitude comes first
    (GeoJSON order, not the "lat, lon" of most maps). The index is a sorted set whose scores are
    52-bit geohashes: positions come back rounded to well under a metre, latitudes beyond ±85.05°
    are refused, and ZREM removes a place.
    """
    if not places:
        raise ValueError("add_places needs at least one place")
    values: list[object] = []
    for name, (longitude, latitude) in places.items():
        values += [longitude, latitude, name]
    return client.geoadd(index, values)


def places_near(client, index: str, longitude: float, latitude: float, radius_km: float,
                limit: int | None = None) -> list[tuple[str, float]]:
    """The places within `radius_km` of a point, nearest first, as (name, distance in km).

    Command: GEOSEARCH index FROMLONLAT lon lat BYRADIUS r km ASC WITHDIST [COUNT limit]
    (Redis >= 6.2; GEORADIUS is its deprecated predecessor). O(N + log M), N = the places in the
    grid cells around the circle; COUNT trims the reply but the matches are still all found and
    sorted first. Distances assume a spherical Earth (up to about 0.5 % off).
    """
    found = client.geosearch(index, longitude=longitude, latitude=latitude, radius=radius_km, unit="km",
                             sort="ASC", count=limit, withdist=True)
    return [(name, distance) for name, distance in found]
