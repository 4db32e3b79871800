"""Checkers for chapter 02's exercises (see `course_lib.exercises` for the pattern).

Keys written: only under `course:caching:exercise:` (strings: cached JSON, locks, test keys).
"""

from __future__ import annotations

from typing import Callable

from course_lib.concurrency import StillRunning, run_together
from course_lib.exercises import ExerciseFailed, exercise_prefix
from course_lib.sample_db import Shop


def _counting(value) -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    def load():
        calls[0] += 1
        return value

    return load, calls


def check_negative_caching(client, solution: Callable) -> None:
    """Cache-aside that also caches a missing row

    `solution(client, cache_key, load)` returns `load()`'s value, cached as JSON with an expiry;
    a `None` (no such row) must be cached too, so that asking again does not call `load`.
    """
    prefix = exercise_prefix(check_negative_caching)
    row = {"id": 1, "name": "Ada"}
    load, calls = _counting(row)
    for _ in range(3):
        if solution(client, prefix + "user:1", load) != row:
            raise ExerciseFailed("for an existing row, return exactly what load() returned")
    if calls[0] != 1:
        raise ExerciseFailed(f"an existing row was loaded {calls[0]} times in 3 calls: cache it on the first miss")
    missing, missing_calls = _counting(None)
    for _ in range(3):
        if solution(client, prefix + "user:2", missing) is not None:
            raise ExerciseFailed("for a missing row, return None")
    if missing_calls[0] != 1:
        raise ExerciseFailed(f"a missing row reached the database {missing_calls[0]} times in 3 calls: "
                             "cache the miss as well (JSON null), with a shorter expiry")
    for name in ("user:1", "user:2"):
        if client.pttl(prefix + name) <= 0:
            raise ExerciseFailed(f"{prefix + name} has no expiry: set one in the same command (SET ... EX/PX)")


def check_prefix_invalidation(client, solution: Callable) -> None:
    """Invalidate every key under a prefix without KEYS

    `solution(client, prefix)` deletes every key whose name starts with `prefix`, with SCAN in
    batches rather than KEYS, and returns how many it deleted.
    """
    base = exercise_prefix(check_prefix_invalidation)
    prefix = base + "user:42:"
    client.mset({f"{prefix}{n}": "cached" for n in range(1500)})
    client.mset({f"{base}user:420:{n}": "keep" for n in range(5)} | {base + "user:42": "keep"})
    keys_before = client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0)
    deleted = solution(client, prefix)
    if client.info("commandstats").get("cmdstat_keys", {}).get("calls", 0) != keys_before:
        raise ExerciseFailed("KEYS was called: it walks the whole keyspace in one blocking command; use SCAN")
    left = sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000))
    if left:
        raise ExerciseFailed(f"{left} keys under the prefix survived: keep calling SCAN until the cursor is 0")
    kept = sum(1 for _ in client.scan_iter(match=base + "user:42*", count=1000))
    if kept != 6:
        raise ExerciseFailed("keys outside the prefix were deleted (user:420:..., or user:42 itself)")
    if deleted != 1500:
        raise ExerciseFailed(f"returned {deleted!r}, but 1500 keys were deleted")


def check_stampede_lock(client, solution: Callable, concurrency: int = 8, timeout: float = 30.0) -> None:
    """One database query for many concurrent misses

    `solution(client, cache_key, load)` is cache-aside where, of many callers missing the same
    key at once, only one calls `load()` (the slow query) and the others wait for its result.
    """
    prefix = exercise_prefix(check_stampede_lock)
    cache_key = prefix + "report:7"
    with Shop() as shop:
        expected = shop.customer_report(7)
        queries = shop.queries
        try:
            results = run_together(lambda _slot: solution(client, cache_key, lambda: shop.customer_report(7)),
                                   concurrency, timeout=timeout, what="stampede_lock callers")
        except StillRunning:
            raise ExerciseFailed(f"some callers had not returned after {timeout:.0f} s: bound every wait") from None
        loads = shop.queries - queries
    if any(result != expected for result in results):
        raise ExerciseFailed("every caller must return the report load() returns")
    if loads != 1:
        raise ExerciseFailed(f"{concurrency} concurrent misses ran the query {loads} times: "
                             "let one caller take a lock (SET NX PX) and the others poll the cache")
    if client.pttl(cache_key) < 0:
        raise ExerciseFailed("the cached report has no expiry: store it with SET ... EX/PX")
    for name in client.scan_iter(match=prefix + "*"):
        if name != cache_key:
            raise ExerciseFailed(f"{name} is still there after every caller returned: release the lock "
                                 "(and give it an expiry, PX, in case its holder dies)")
