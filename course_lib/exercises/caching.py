"""Checkers for chapter 02's exercises (see `course_lib.exercises` for the pattern).

Each checker hands the learner's function an `adversary.Adversary` client: the checker counts
its commands (SCAN's COUNT, the keys each UNLINK names), crashes its app server after each round
trip in turn (`every_crash`: nothing may be left without an expiry), and plays the other app
servers right after its commands (another loader stores the value, another takes the lock).
The stampede checker also runs the learner's function in several processes at once: several app
servers, each with its own in-process locks.

Keys written: only under `course:caching:exercise:` (strings: cached JSON, locks, test keys; the
checker's own bookkeeping under `course:caching:exercise:checker:`).
"""

from __future__ import annotations

import json
from typing import Callable

import redis

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import (Adversary, ProcessesFailed, SimulatedCrash, every_crash,
                                            run_in_processes)
from course_lib.keys import delete_prefix

_MISSING = object()


def _counting(value) -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    def load():
        calls[0] += 1
        return value

    return load, calls


def _same(got, expected) -> bool:
    """Equal and of the same type all the way down: 0 is not False, [] is not {}."""
    return json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True) and type(got) is type(expected)


def _without_expiry(client, prefix: str) -> list[str]:
    """Keys under `prefix` (not the checker's own) that have no TTL."""
    return sorted(name for name in client.scan_iter(match=prefix + "*", count=1000)
                  if not name.startswith(prefix + "checker:") and client.pttl(name) == -1)


# --- 1. negative caching -------------------------------------------------------------------------

def check_negative_caching(client, solution: Callable) -> None:
    """Cache-aside that also caches a missing row

    `solution(client, cache_key, load)` returns `load()`'s value, calling `load` only on a miss.
    The properties checked:

    - JSON: the value is cached as JSON under `cache_key` and comes back equal (a dict with a
      list, a float, a boolean and non-ASCII text inside) on every later call, without `load`;
    - negative caching: a `None` from `load` (no such row) is cached too, so asking again does not
      reach the database; only `None` means "no such row": 0, "", [], {} and False are real
      values, cached and returned as they are;
    - expiring, in the same command: every entry has a TTL, set by the command that writes the
      value (a crash between a SET and a separate EXPIRE must not leave an entry that never expires);
    - a miss expires sooner: its TTL is at most half of a real value's.
    """
    prefix = exercise_prefix(check_negative_caching)
    row = {"id": 1, "name": "Zoë", "tags": ["vip", "beta"], "score": 1.5, "active": True}
    with Adversary(client) as adversary:
        learner = adversary.client
        load, calls = _counting(row)
        for n in range(3):
            got = solution(learner, prefix + "user:1", load)
            adversary.require_used()
            if n and isinstance(got, (str, bytes)):
                raise ExerciseFailed("on a cache hit your function returned the cached text itself: decode the "
                                     "JSON, so that a hit returns the same value as a miss")
            if not _same(got, row):
                raise ExerciseFailed(f"call {n + 1} for an existing row returned {got!r:.80}, not what load() "
                                     "returned")
        if calls[0] != 1:
            raise ExerciseFailed(f"an existing row was loaded {calls[0]} times in 3 calls: cache it on the first miss")
        try:
            stored = json.loads(client.get(prefix + "user:1") or "")
        except ValueError:
            stored = _MISSING
        if stored != row:
            raise ExerciseFailed(f"{prefix}user:1 does not hold the row as JSON text: the cache must hold JSON, "
                                 "which every app server can read")

        missing, missing_calls = _counting(None)
        for _ in range(3):
            if solution(learner, prefix + "user:2", missing) is not None:
                raise ExerciseFailed("for a missing row (load() returned None), return None")
        if missing_calls[0] != 1:
            raise ExerciseFailed(f"a missing row reached the database {missing_calls[0]} times in 3 calls: "
                                 "cache the miss as well, not only rows that exist")

        falsy = {"zero": 0, "empty-text": "", "empty-list": [], "empty-dict": {}, "false": False}
        for name, value in falsy.items():
            load_falsy, falsy_calls = _counting(value)
            answers = [solution(learner, prefix + name, load_falsy) for _ in range(2)]
            if not all(_same(answer, value) for answer in answers):
                raise ExerciseFailed(f"load() returned {value!r} and your function returned {answers!r:.60}: "
                                     "only None means a missing row; a falsy value is a real value")
            if falsy_calls[0] != 1:
                raise ExerciseFailed(f"a row whose value is {value!r} was loaded {falsy_calls[0]} times in 2 calls: "
                                     "a falsy value is a real value and must be cached like one (test for None, "
                                     "not for truth)")

    ttls = {name: client.pttl(prefix + name) for name in ("user:1", "user:2", *falsy)}
    for name, ttl in ttls.items():
        if ttl < 0:
            raise ExerciseFailed(f"{prefix + name} has no expiry: every cached entry, a miss too, needs a TTL")
    if ttls["user:2"] * 2 > ttls["user:1"] + 1000:  # exactly half passes, however long the calls between took
        raise ExerciseFailed(f"the miss is cached for {ttls['user:2']} ms and the row for {ttls['user:1']} ms: "
                             "a missing row may appear soon (a sign-up), so cache the miss for a much shorter "
                             "time (at most half of a real value's TTL)")
    short = sorted(name for name in falsy if ttls[name] * 2 <= ttls["user:1"])
    if short:
        raise ExerciseFailed(f"the falsy values {short} got the short TTL of a missing row: only None is a miss")

    for name, load in (("crash:row", _counting(row)[0]), ("crash:miss", _counting(None)[0])):
        every_crash(client, lambda: client.delete(prefix + name), lambda c: solution(c, prefix + name, load),
                    lambda: (f"left {prefix + name} without an expiry (it would be served for ever)"
                             if client.pttl(prefix + name) == -1 else None),
                    "caching " + ("a row" if name == "crash:row" else "a missing row"))


# --- 2. prefix invalidation ----------------------------------------------------------------------

MAX_COUNT = 1000  # COUNT per SCAN call: each call's work grows with it, and nothing else runs meanwhile


def _scan_counts(adversary: Adversary) -> list[int]:
    """The COUNT of every SCAN the learner sent (10, the server's default, when absent)."""
    counts = []
    for batch in adversary.sent:
        for command in batch:
            if command[0].upper() == "SCAN":
                words = [word.upper() for word in command]
                counts.append(int(command[words.index("COUNT") + 1]) if "COUNT" in words else 10)
    return counts


def _deletes(adversary: Adversary) -> list[int]:
    """How many keys each UNLINK or DEL the learner sent named."""
    return [len(command) - 1 for batch in adversary.sent for command in batch
            if command[0].upper() in ("UNLINK", "DEL")]


def _invalidate(client, solution: Callable, prefix: str, crash_after: int | None = None):
    """Run the learner's function once on its own Adversary; returns (result or raised error, adversary)."""
    with Adversary(client, crash_after=crash_after) as adversary:
        try:
            result = solution(adversary.client, prefix)
        except ValueError as error:  # a refusal, which some cases require
            result = error
        except SimulatedCrash:  # `crash_after` stopped it: `adversary.crashed` says so
            result = None
        return result, adversary


def check_prefix_invalidation(client, solution: Callable) -> None:
    """Invalidate every key under a prefix without KEYS

    `solution(client, prefix)` deletes every key whose name starts with `prefix` and returns how
    many it deleted. The properties checked:

    - iterate, don't block: SCAN until the cursor comes back to 0, each call with a COUNT of at
      most 1,000 (a giant COUNT makes one SCAN walk the keyspace in one go, as KEYS does); never KEYS;
    - batched deletes: UNLINK (or DEL) names many keys at once, not one command per key;
    - exact: every key under the prefix goes, every other key stays (`user:42` and `user:420:...`
      are not under `user:42:`); 0 when nothing matches;
    - a literal prefix: a prefix holding SCAN's pattern characters (`*`, `?`, `[`) matches only
      itself, or the function refuses it with ValueError;
    - an empty prefix (every key of the server) is refused with ValueError before any command.
    """
    base = exercise_prefix(check_prefix_invalidation)
    prefix = base + "user:42:"
    client.mset({f"{prefix}{n}": "cached" for n in range(1500)})
    client.mset({f"{base}user:420:{n}": "keep" for n in range(5)} | {base + "user:42": "keep"})
    deleted, adversary = _invalidate(client, solution, prefix)
    if isinstance(deleted, ValueError):
        raise ExerciseFailed(f"your function raised ValueError for the prefix {prefix!r}: {deleted}")
    adversary.require_used()
    if adversary.commands["KEYS"]:
        raise ExerciseFailed("KEYS was called: it walks the whole keyspace in one blocking command; use SCAN")
    counts = _scan_counts(adversary)
    if not counts:
        raise ExerciseFailed("your function sent no SCAN: iterate over the keyspace with SCAN")
    if max(counts) > MAX_COUNT:
        raise ExerciseFailed(f"a SCAN asked for COUNT {max(counts)}: one call then walks (nearly) the whole "
                             f"keyspace while every other client waits, as KEYS does. Keep each step small "
                             f"(COUNT at most {MAX_COUNT})")
    left = sum(1 for _ in client.scan_iter(match=prefix + "*", count=1000))
    if left:
        raise ExerciseFailed(f"{left} keys under the prefix survived: keep calling SCAN until the cursor is 0")
    kept = sum(1 for _ in client.scan_iter(match=base + "user:42*", count=1000))
    if kept != 6:
        raise ExerciseFailed("keys outside the prefix were deleted (user:420:..., or user:42 itself)")
    if returned(deleted, int, "the number of keys deleted") != 1500:
        raise ExerciseFailed(f"returned {deleted!r}, but 1500 keys were deleted")
    deletes = _deletes(adversary)
    if deletes and len(deletes) > len(counts) and sum(deletes) < 2 * len(deletes):
        raise ExerciseFailed(f"{len(deletes)} UNLINK/DEL commands for 1500 keys, one per key: each is a command "
                             "for the server to run (and a round trip unless pipelined); name many keys in each")

    nothing, _ = _invalidate(client, solution, base + "nobody:")
    if nothing != 0:
        raise ExerciseFailed(f"with no key under the prefix your function returned {nothing!r}, not 0")

    # A prefix holding pattern characters: unescaped, `q?[1]*:*` also matches the decoys `qa1b:...`.
    literal, decoy = base + "q?[1]*:", base + "qa1b:"
    client.mset({f"{literal}{n}": "cached" for n in range(10)} | {f"{decoy}{n}": "keep" for n in range(10)})
    result, _ = _invalidate(client, solution, literal)
    decoys = sum(1 for _ in client.scan_iter(match=decoy + "*", count=1000))
    if decoys != 10:
        raise ExerciseFailed(f"invalidating the prefix {literal!r} also deleted {10 - decoys} keys of {decoy!r}: "
                             "*, ? and [ in a prefix are pattern characters to SCAN's MATCH; make them match "
                             "only themselves, or refuse such a prefix with ValueError")
    if not isinstance(result, ValueError):
        survivors = sum(1 for name in client.scan_iter(match=base + "q*", count=1000) if name.startswith(literal))
        if survivors or result != 10:
            raise ExerciseFailed(f"for the prefix {literal!r} your function returned {result!r} and left "
                                 f"{survivors} of its 10 keys: match it literally, or refuse it with ValueError")

    # Crash at the first command: a function that does not refuse the empty prefix never reaches the server.
    refused, crashing = _invalidate(client, solution, "", crash_after=0)
    if not isinstance(refused, ValueError):
        what = "sent a command" if crashing.crashed else f"returned {refused!r}"
        raise ExerciseFailed(f"given an empty prefix your function {what} instead of raising ValueError: an "
                             "empty prefix names every key of the server (the checker stopped it before it "
                             "reached the server)")


# --- 3. stampede lock ----------------------------------------------------------------------------

REPORT = {"id": 7, "orders": 51, "spent_cents": 1_112_668, "rank": 7436, "name": "Zoë"}
WAIT_LIMIT = 2.0  # seconds a caller may wait for another app server's load (the contract)
OTHER_TOKEN = "held by another app server"


def _process_client(client) -> redis.Redis:
    """A client of `client`'s server made inside a forked process (connections are not shared across a fork)."""
    return redis.Redis(connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs))


def _locks(client, prefix: str, cache_key: str) -> dict[str, int]:
    """Keys next to the cache key (the learner's locks) with their PTTL."""
    return {name: client.pttl(name) for name in client.scan_iter(match=cache_key + "*", count=1000)
            if name != cache_key and not name.startswith(prefix + "checker:")}


def check_stampede_lock(client, solution: Callable, processes: int = 4, timeout: float = 20.0) -> None:
    """One database query for many concurrent misses

    `solution(client, cache_key, load)` is cache-aside for one key where, of many app servers
    missing the key together, only one calls `load()` (the slow query) and the others wait for its
    result. The lock lives in Redis, next to the value: its key starts with `cache_key` (e.g. a
    suffix). The properties checked:

    - one load across app servers: `processes` processes (each with its own in-process locks) call
      at once, and `load` runs once; every caller returns its value;
    - the winner checks the cache again once it holds the lock (another app server may have
      stored the value between its read and its lock), and a waiter returns the value another app
      server stores, without loading;
    - expiring: the lock has a TTL while `load` runs, the cached value has one, and a crash after
      any round trip leaves no key without one;
    - released by its owner only: if the lock expired while its holder was slow and another app
      server took it, the first must not delete the second's lock (nor may a waiter delete it);
      so each acquisition writes a value of its own (two calls must not write the same one: a
      constant, or the process id shared by an app server's threads, lets any holder delete it);
    - bounded: a caller waits at most about 2 s for another's load, then loads on its own; no
      caller waits for ever on a lock whose holder is stuck.
    """
    prefix = exercise_prefix(check_stampede_lock)
    cache_key = prefix + "report:7"
    seen: dict[str, int] = {}
    values: list[dict[str, str]] = []  # the lock values each call wrote

    def fresh() -> None:
        delete_prefix(client, prefix)

    # One caller, cold cache, twice: the lock it takes is looked at while load() runs.
    def load_and_look():
        seen.update(_locks(client, prefix, cache_key))
        values.append({name: client.get(name) for name in seen})
        return REPORT

    for _call in range(2):
        fresh()
        with Adversary(client) as adversary:
            got = solution(adversary.client, cache_key, load_and_look)
            adversary.require_used()
        if not _same(got, REPORT):
            raise ExerciseFailed(f"a caller returned {got!r:.80}, not the report load() returned")
        if client.pttl(cache_key) < 0:
            raise ExerciseFailed("the cached report has no expiry (or was not cached): store it with a TTL")
        leftover = sorted(name for name in client.scan_iter(match=prefix + "*", count=1000) if name != cache_key)
        if leftover:
            raise ExerciseFailed(f"{leftover[0]} is still there after the caller returned: release the lock when "
                                 "done")
    repeated = sorted(name for name in seen if len(values) == 2 and values[0].get(name) is not None
                      and values[0].get(name) == values[1].get(name))
    if repeated:
        raise ExerciseFailed(f"two calls wrote the same value, {values[0][repeated[0]]!r:.40}, into the lock "
                             f"{repeated[0]}: a release that compares it cannot tell one holder from another (another "
                             "call, or another thread of the same app server). Write a value unique to each "
                             "acquisition")

    _check_processes(client, solution, prefix, cache_key, processes, timeout)

    if not seen:
        raise ExerciseFailed("while load() ran, no lock key next to the cache key existed: take the lock in "
                             "Redis (so it holds back every app server), under a name that starts with the "
                             "cache key")
    unexpiring = sorted(name for name, ttl in seen.items() if ttl == -1)
    if unexpiring:
        raise ExerciseFailed(f"while load() ran, the lock {unexpiring[0]} had no expiry: if its holder dies, "
                             "every other app server waits for ever. Give the lock a TTL when taking it")

    every_crash(client, fresh, lambda c: solution(c, cache_key, lambda: REPORT),
                lambda: (f"left {_without_expiry(client, prefix)[0]} without an expiry"
                         if _without_expiry(client, prefix) else None), "loading the report")

    _check_recheck(client, solution, fresh, cache_key, prefix)
    _check_waiter(client, solution, fresh, cache_key, prefix, sorted(seen))
    _check_owner(client, solution, fresh, cache_key, prefix, sorted(seen))
    _check_bounded(client, solution, fresh, cache_key, prefix, sorted(seen))


def _check_processes(client, solution, prefix: str, cache_key: str, processes: int, timeout: float) -> None:
    """`processes` app servers miss together; the load (slow: a bounded server-side wait) is counted in Redis."""
    loads, nobody = prefix + "checker:loads", prefix + "checker:nobody"
    delete_prefix(client, prefix)

    def app_server(_slot: int):
        learner, database = _process_client(client), _process_client(client)

        def slow_query():
            database.blpop([nobody], timeout=0.25)  # ~250 ms of "query": nobody pushes to this list
            database.incr(loads)
            return REPORT

        try:
            return solution(learner, cache_key, slow_query)
        finally:
            learner.close()
            database.close()

    try:
        results = run_in_processes(app_server, processes, timeout=timeout)
    except ProcessesFailed as error:
        if "had not returned" in str(error):
            raise ExerciseFailed(f"{processes} app servers missing together: {error}. Bound every wait") from None
        raise ExerciseFailed(f"in one of {processes} app servers your function raised {error}") from None
    ran = int(client.get(loads) or 0)
    if ran != 1:
        raise ExerciseFailed(f"{processes} app servers (processes) that missed together ran the query {ran} "
                             "times: only one may load. A lock inside one process holds back that process's "
                             "threads only")
    if not all(_same(result, REPORT) for result in results):
        raise ExerciseFailed("every caller must return the report load() returns, the waiters too")
    if client.pttl(cache_key) < 0:
        raise ExerciseFailed("the cached report has no expiry: store it with a TTL")
    client.delete(loads)


def _check_recheck(client, solution, fresh, cache_key: str, prefix: str) -> None:
    """Right after the learner's first read misses, another app server stores the value and releases its lock."""
    fresh()
    stored = {**REPORT, "name": "stored by another app server"}

    def other_stores(other) -> bool:
        if _locks(other, prefix, cache_key):  # the learner holds the lock: no one else may store now
            return False
        other.set(cache_key, json.dumps(stored), ex=300)
        return True

    load, calls = _counting(REPORT)
    with Adversary(client) as adversary:
        stores = adversary.after(cache_key, other_stores)
        got = solution(adversary.client, cache_key, load)
    if stores.result and calls[0]:
        raise ExerciseFailed("another app server stored the report right after your first read missed, and "
                             "your function still called load(): once you hold the lock, look at the cache "
                             "again before loading")
    if stores.result and not _same(got, stored):
        raise ExerciseFailed("another app server stored the report while your function ran, but it returned "
                             f"{got!r:.60} instead")


def _check_waiter(client, solution, fresh, cache_key: str, prefix: str, locks: list[str]) -> None:
    """Another app server holds the lock; right after the learner's first try at it, that one stores and releases."""
    fresh()
    stored = {**REPORT, "name": "stored by the lock's holder"}
    for name in locks:
        client.set(name, OTHER_TOKEN, px=30_000)

    def holder_finishes(other) -> None:
        other.set(cache_key, json.dumps(stored), ex=300)
        other.delete(*locks)

    load, calls = _counting(REPORT)
    with Adversary(client) as adversary:
        finished = adversary.after(locks[0], holder_finishes)
        got = solution(adversary.client, cache_key, load)
    if not finished.fired:
        raise ExerciseFailed(f"while another app server held the lock {locks[0]}, your function never looked at "
                             "it and loaded anyway: a caller that misses must respect the lock")
    if calls[0] or not _same(got, stored):
        raise ExerciseFailed("another app server held the lock, then stored the report and released it: your "
                             f"function {'called load()' if calls[0] else f'returned {got!r:.60}'} instead of "
                             "returning the stored report")


def _check_owner(client, solution, fresh, cache_key: str, prefix: str, locks: list[str]) -> None:
    """After each learner command naming its lock in turn, the lock 'expires' and another app server takes it."""
    def take_over(other) -> bool:
        held = _locks(other, prefix, cache_key)
        for name in held:
            other.set(name, OTHER_TOKEN, px=30_000)
        return bool(held)

    load, _ = _counting(REPORT)
    fresh()
    with Adversary(client) as counting:
        counted = counting.after(locks[0], lambda _other: None, at=10**9)
        solution(counting.client, cache_key, load)
    for at in range(1, counted.touches + 1):
        fresh()
        with Adversary(client) as adversary:
            taken = adversary.after(locks[0], take_over, at=at)
            solution(adversary.client, cache_key, load)
        if taken.result and any(client.get(name) != OTHER_TOKEN for name in locks):
            raise ExerciseFailed(f"right after your {taken.command} on the lock, the lock expired and another app "
                                 "server took it; then your function deleted that app server's lock. Delete the "
                                 "lock only if it is still yours, in one step")


def _check_bounded(client, solution, fresh, cache_key: str, prefix: str, locks: list[str]) -> None:
    """Another app server holds the lock and is stuck: the caller must come back within the bound, loading itself."""
    fresh()
    for name in locks:
        client.set(name, OTHER_TOKEN, px=60_000)
    limit = WAIT_LIMIT + 3.0  # the contract's 2 s, and room for a loaded machine

    def caller(_slot: int):
        learner = _process_client(client)
        try:
            return solution(learner, cache_key, lambda: REPORT)
        finally:
            learner.close()

    try:
        [got] = run_in_processes(caller, 1, timeout=limit)
    except ProcessesFailed as error:
        if "had not returned" in str(error):
            raise ExerciseFailed(f"another app server held the lock and was stuck: your function had not returned "
                                 f"after {limit:g} s. Bound every wait (about {WAIT_LIMIT:g} s), then load on "
                                 "your own") from None
        raise ExerciseFailed(f"while another app server held the lock your function raised {error}") from None
    if not _same(got, REPORT):
        raise ExerciseFailed(f"after waiting in vain for another app server, your function returned {got!r:.60}: "
                             "load the report on your own")
    if any(client.get(name) != OTHER_TOKEN for name in locks):
        raise ExerciseFailed("your function deleted (or overwrote) the lock another app server held: only the "
                             "lock's owner may release it")
