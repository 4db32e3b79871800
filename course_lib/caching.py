"""Caching patterns of chapter 02: cache-aside, write-through, invalidation, stampede protection, client-side caching.

Three ways to keep a hot key from stampeding at its expiry: `cache_aside_locked` (one loads, the
others wait), `cache_aside_early` (probabilistic early refresh, "XFetch": one caller reloads
before the expiry) and `cache_aside_swr` (stale-while-revalidate: callers get the old value while
one reload runs in the background). `versioned_name` puts a schema version in cache keys for deploys.

`guide_cache_aside` is the guide's version, kept to show live what it forgets.

Keys written (all strings):
- `course:caching:<name>:<arg>...`: a cached result as JSON; `null` is a cached "no such row"
  (negative caching), kept for a shorter time than a real value (the guide's version caches no `null`);
  `cache_aside_early` stores `{"value": ..., "delta": seconds the load took}` instead;
- `course:caching:<name>:v<version>:<arg>...`: the same, under a versioned name (`versioned_name`);
- `course:caching:lock:<name>:<arg>...`: a random token, the per-key loading lock of
  `cache_aside_locked` (and the reload lock of `cache_aside_early` and `cache_aside_swr`),
  expiring on its own (PX) if its holder dies.

Bulk invalidation uses `course_lib.keys.delete_prefix` (SCAN + UNLINK in batches, every primary
of a cluster): there is deliberately no second copy of it here.
"""

from __future__ import annotations

import functools
import json
import math
import random
import secrets
import threading
import time
from typing import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from course_lib import lua
from course_lib.keys import key

CHAPTER = "caching"
INVALIDATION_CHANNEL = "__redis__:invalidate"
# What TrackingCache copies from the client it is given: where the server is and how to log in.
_ADDRESS_SETTINGS = ("host", "port", "path", "db", "username", "password", "credential_provider",
                     "socket_timeout", "socket_connect_timeout", "decode_responses", "encoding", "encoding_errors")


def jittered_ttl(ttl: float, jitter: float, rng: random.Random | None = None) -> int:
    """`ttl` seconds stretched by a random fraction in [0, `jitter`], in whole milliseconds.

    Entries cached together (after a deploy, a cache flush, a batch job) would otherwise all
    expire in the same instant and send their reloads to the database at once; jitter spreads
    those expiries over `ttl * jitter` seconds.
    """
    rng = rng or random
    return max(1, round(ttl * (1 + rng.uniform(0, jitter)) * 1000))


def store(client, cache_key: str, value, ttl: float, jitter: float = 0.1, negative_ttl: float = 30.0,
          rng: random.Random | None = None) -> int:
    """Cache `value` as JSON under `cache_key`; returns the expiry chosen, in milliseconds.

    Command: SET key value PX ms (one atomic command: the value never exists without its expiry).
    A `None` value, a row that does not exist, is cached too, as `null` for `negative_ttl`
    seconds: without it every request for a missing row would reach the database.
    """
    ms = jittered_ttl(negative_ttl if value is None else ttl, jitter, rng)
    client.set(cache_key, json.dumps(value), px=ms)
    return ms


def _with_helpers(cached: Callable, client, name: str) -> Callable:
    cached.key = lambda *args: key(CHAPTER, name, *args)
    cached.invalidate = lambda *args: client.delete(key(CHAPTER, name, *args))
    return cached


def cache_aside(client, name: str, *, ttl: float = 300.0, jitter: float = 0.1, negative_ttl: float = 30.0,
                rng: random.Random | None = None) -> Callable[[Callable], Callable]:
    """Decorator: serve `load(*args)` from Redis, calling `load` only on a miss (lazy loading).

    Commands: GET on every call; on a miss, SET ... PX through `store` (TTL with jitter, and
    negative caching of `None`). The decorated function gains `.key(*args)`, the cache key of a
    call, and `.invalidate(*args)`, which DELs it.

    Not atomic and not protected against stampedes: N callers that miss at the same moment all
    call `load` (see `cache_aside_locked`). Arguments become key parts, so they must be short
    strings or numbers. On a cluster each key lives on one primary; nothing else changes.
    """

    def decorate(load: Callable) -> Callable:
        @functools.wraps(load)
        def cached(*args):
            cache_key = key(CHAPTER, name, *args)
            hit = client.get(cache_key)
            if hit is not None:
                return json.loads(hit)
            value = load(*args)
            store(client, cache_key, value, ttl, jitter, negative_ttl, rng)
            return value

        return _with_helpers(cached, client, name)

    return decorate


def guide_cache_aside(client, name: str, ttl: int = 3600) -> Callable[[Callable], Callable]:
    """The guide's cache-aside, ported faithfully to show what it forgets (do not use it).

    Commands: GET; on a miss, SET ... EX `ttl` (one hour). Its three mistakes, each shown live in
    chapter 02: a miss (`None`, no such row) is never cached, so every request for a missing row
    reaches the database; a hit is recognised by truth (`if cached`), which happens to work only
    because a cached value is JSON text; and every entry gets the same TTL, with no jitter. The
    decorated function gains `.key(*args)` and `.invalidate(*args)`, as with `cache_aside`.
    """

    def decorate(load: Callable) -> Callable:
        @functools.wraps(load)
        def cached(*args):
            cache_key = key(CHAPTER, name, *args)
            hit = client.get(cache_key)
            if hit:
                return json.loads(hit)
            value = load(*args)
            if value is None:
                return None
            client.set(cache_key, json.dumps(value), ex=ttl)
            return value

        return _with_helpers(cached, client, name)

    return decorate


def release_lock(client, lock_key: str, token: str) -> bool:
    """Delete `lock_key` only if it still holds `token` (Lua: GET + DEL, atomic). True if it did."""
    return bool(lua.register(client, "caching_release_lock")(keys=[lock_key], args=[token]))


def cache_aside_locked(client, name: str, *, ttl: float = 300.0, jitter: float = 0.1, negative_ttl: float = 30.0,
                       lock_ttl: float = 10.0, wait: float = 10.0, poll: float = 0.005,
                       rng: random.Random | None = None) -> Callable[[Callable], Callable]:
    """`cache_aside` with stampede protection: of N callers that miss together, one loads.

    On a miss a caller takes the key's lock with SET lock token NX PX; the winner checks the cache
    once more (it may have been filled between its GET and its SET NX), loads, stores, and
    releases the lock with `release_lock`. The others poll the cache every `poll` seconds and
    return the winner's value. Why a lock in Redis rather than single-flight inside one process:
    it also holds N application servers back, not just N threads of one.

    Bounded on both sides: the lock expires after `lock_ttl` seconds if its holder dies, and a
    waiter that sees no value within `wait` seconds loads on its own (a slow database then costs
    a second query, never a hung request). Keep `lock_ttl` above the slowest load, or a second
    loader starts while the first still runs. On a cluster the lock and the value may live on
    different primaries; they are used by separate commands, so that is fine.
    """

    def decorate(load: Callable) -> Callable:
        @functools.wraps(load)
        def cached(*args):
            cache_key = key(CHAPTER, name, *args)
            lock_key = key(CHAPTER, "lock", name, *args)
            deadline = time.monotonic() + wait
            while True:
                hit = client.get(cache_key)
                if hit is not None:
                    return json.loads(hit)
                token = secrets.token_hex(16)
                if client.set(lock_key, token, nx=True, px=round(lock_ttl * 1000)):
                    try:
                        hit = client.get(cache_key)
                        if hit is not None:
                            return json.loads(hit)
                        value = load(*args)
                        store(client, cache_key, value, ttl, jitter, negative_ttl, rng)
                        return value
                    finally:
                        release_lock(client, lock_key, token)
                if time.monotonic() > deadline:
                    return load(*args)
                time.sleep(poll)  # waiting for another caller's load: nothing to block on

        return _with_helpers(cached, client, name)

    return decorate


def _entry_and_pttl(client, cache_key: str) -> tuple[str | None, int]:
    """GET and PTTL of `cache_key` in one MULTI/EXEC (one round trip, both read at the same instant)."""
    with client.pipeline(transaction=True) as pipe:
        raw, remaining_ms = pipe.get(cache_key).pttl(cache_key).execute()
    return raw, remaining_ms


def cache_aside_early(client, name: str, *, ttl: float = 300.0, beta: float = 1.0, lock_ttl: float = 10.0,
                      rng: random.Random | None = None) -> Callable[[Callable], Callable]:
    """Decorator: cache-aside that reloads a hot entry shortly *before* it expires (XFetch).

    Probabilistic early expiration (Vattani, Chierichetti and Lowenstein, "Optimal probabilistic
    cache stampede prevention", VLDB 2015). Each entry is JSON `{"value": ..., "delta": s}`, where
    `delta` is how long its load took, written with SET ... PX (`ttl` seconds, no jitter: the
    early reloads already spread). A read is one MULTI/EXEC of GET and PTTL. The caller reloads
    early when `delta * beta * -ln(u)` (u uniform in (0, 1]) reaches the remaining TTL: rarely
    while the entry is young, almost surely in its last `delta` or so. Under steady traffic one
    caller reloads before the expiry and nobody ever misses. That caller takes the key's lock
    (SET lock token NX PX `lock_ttl`, released with `release_lock`) first; if another caller holds
    it, it returns the current value instead: one query per reload, not one per lucky draw.
    The remaining TTL comes from the server, so app servers' clocks do not matter.

    Caveats: the caller that reloads waits for the load (the others do not); `beta` > 1 reloads
    earlier, 0 never early (plain cache-aside). A true miss (a cold key, an eviction, a key read
    too rarely to draw in time) loads without the lock, like `cache_aside`: warm hot keys, or use
    `cache_aside_locked` for them. `None` is cached like any value. On a cluster the MULTI reads
    one key, so it runs on the key's primary (redis-py's cluster pipeline must support
    transactions). The decorated function gains `.key(*args)` and `.invalidate(*args)`.
    """
    rng = rng or random.Random()

    def decorate(load: Callable) -> Callable:
        def reload(cache_key: str, args: tuple):
            start = time.monotonic()
            value = load(*args)
            entry = {"value": value, "delta": time.monotonic() - start}
            client.set(cache_key, json.dumps(entry), px=max(1, round(ttl * 1000)))
            return value

        @functools.wraps(load)
        def cached(*args):
            cache_key = key(CHAPTER, name, *args)
            raw, remaining_ms = _entry_and_pttl(client, cache_key)
            if raw is None:
                return reload(cache_key, args)
            entry = json.loads(raw)
            draw = entry["delta"] * beta * -math.log(1.0 - rng.random())  # 1 - random() is in (0, 1]
            if draw * 1000 < remaining_ms:
                return entry["value"]
            lock_key = key(CHAPTER, "lock", name, *args)
            token = secrets.token_hex(16)
            if not client.set(lock_key, token, nx=True, px=round(lock_ttl * 1000)):
                return entry["value"]  # another caller is reloading it; this value is still valid
            try:
                return reload(cache_key, args)
            finally:
                release_lock(client, lock_key, token)

        return _with_helpers(cached, client, name)

    return decorate


def _in_a_thread(job: Callable[[], object]) -> None:
    threading.Thread(target=job, name="cache refresh", daemon=True).start()


def cache_aside_swr(client, name: str, *, ttl: float = 300.0, stale: float = 60.0, lock_ttl: float = 10.0,
                    submit: Callable[[Callable[[], object]], object] = _in_a_thread) -> Callable[[Callable], Callable]:
    """Decorator: stale-while-revalidate; an entry past its `ttl` is served while one caller reloads it in the background.

    Each entry is plain JSON written with SET ... PX (`ttl` + `stale` seconds): fresh while its
    PTTL is above `stale` seconds, then stale. A read is one MULTI/EXEC of GET and PTTL. A stale
    read returns the old value at once, and if it takes the key's lock (SET lock token NX PX
    `lock_ttl`) hands `submit` a job that loads, stores and releases the lock (`release_lock`):
    one reload per key across all app servers, and no caller waits for it.

    Args:
        ttl: seconds an entry is fresh.
        stale: seconds more it may be served stale while it is reloaded; at 0 it never is
            (plain cache-aside with a lock-free miss).
        lock_ttl: the reload lock's expiry, above the slowest load.
        submit: runs the reload job; default a daemon thread per reload. Pass an executor's
            `submit` to bound the threads and to wait for them (`shutdown(wait=True)`).

    Caveats: callers may see data up to `stale` seconds older than `ttl` allows: choose it per
    kind of data (a product description, not a balance). A reload that fails leaves the entry
    stale until the lock expires and the next stale read tries again (the error stays in the
    thread or future); after `ttl` + `stale` it is a plain miss. A true miss loads in the caller,
    without the lock, like `cache_aside`. On a cluster the MULTI reads one key, on its primary.
    The decorated function gains `.key(*args)` and `.invalidate(*args)`.
    """

    def decorate(load: Callable) -> Callable:
        def reload(cache_key: str, args: tuple):
            value = load(*args)
            client.set(cache_key, json.dumps(value), px=max(1, round((ttl + stale) * 1000)))
            return value

        def reload_then_release(cache_key: str, lock_key: str, token: str, args: tuple) -> None:
            try:
                reload(cache_key, args)
            finally:
                release_lock(client, lock_key, token)

        @functools.wraps(load)
        def cached(*args):
            cache_key = key(CHAPTER, name, *args)
            raw, remaining_ms = _entry_and_pttl(client, cache_key)
            if raw is None:
                return reload(cache_key, args)
            if remaining_ms <= stale * 1000:
                lock_key = key(CHAPTER, "lock", name, *args)
                token = secrets.token_hex(16)
                if client.set(lock_key, token, nx=True, px=round(lock_ttl * 1000)):
                    submit(functools.partial(reload_then_release, cache_key, lock_key, token, args))
            return json.loads(raw)

        return _with_helpers(cached, client, name)

    return decorate


def versioned_name(name: str, version: int | str) -> str:
    """`versioned_name("profile", 2)` -> `"profile:v2"`: a cache name that carries the cached shape's version.

    Bump the version in the same change that alters what a loader returns (a field renamed, a
    type changed): code of version 2 reads `course:caching:profile:v2:<id>` and can never parse
    an entry written by version 1, which it would otherwise read back until that entry's TTL.
    No flush is needed at deploy time: the old entries keep their TTL and expire on their own,
    and during a rolling deploy old and new app servers each read their own keys.

    Caveats: the cache starts cold for the new version (a miss per key: warm the hot ones, or
    expect a wave of loads); invalidation on writes must delete the key of every version still
    running; memory holds both versions until the old entries expire.
    """
    return f"{name}:v{version}"


def write_through(client, cache_key: str, write: Callable[[], object], ttl: float = 300.0,
                  jitter: float = 0.1, rng: random.Random | None = None):
    """Write to the database with `write()`, then SET its result in the cache; returns that result.

    Database first: if the write fails, the cache still holds the old, true value. Not atomic
    across the two systems, and racy between two writers: A writes the database, B writes the
    database, B sets the cache, A sets the cache: the cache keeps A's older value until it expires.
    Prefer `update_then_invalidate` when writers can overlap.
    """
    value = write()
    store(client, cache_key, value, ttl, jitter, rng=rng)
    return value


def update_then_invalidate(client, cache_key: str, write: Callable[[], object]):
    """Write to the database with `write()`, then DEL the cached entry; returns what `write()` returned.

    The course's recommended order. A DEL carries no value, so two writers cannot leave an older
    value behind in either order; the next read loads the current row. The remaining window (a
    reader that loaded the old row before the write and stores it after the DEL) is rare and
    bounded by the TTL. Not atomic: a crash between the two steps leaves the old value until its TTL.
    """
    value = write()
    client.delete(cache_key)
    return value


class TrackingCache:
    """Client-side cache kept correct by the server: CLIENT TRACKING with REDIRECT (Redis >= 6).

    Two connections of its own, to the server `client` talks to:
    - a listener (RESP2) subscribed to `__redis__:invalidate`;
    - a reader that sent `CLIENT TRACKING ON REDIRECT <listener id>`: the server remembers every
      key it reads and, when anyone changes one, publishes the key's name to the listener.

    `get` first applies the invalidations that have arrived (a poll of a local socket, no round
    trip), then answers from local memory or, on a miss, with one GET. Between a write and the
    arrival of its invalidation a local read is stale for that short delay: fine for a cache,
    wrong for a lock or a counter.

    Production caveats: both connections refuse to reconnect silently (a new connection would no
    longer be tracked, or have another id, and the cache would go stale without a sign): create a
    new `TrackingCache` on error. One instance is one connection pair, for one thread. Standalone
    servers only: on a cluster each node tracks its own keys. redis-py's built-in cache
    (`cache_config=`) does the same with RESP3 push messages but accepts only Redis >= 7.4.
    """

    def __init__(self, client: redis.Redis):
        pool = client.connection_pool
        settings = {name: value for name, value in pool.connection_kwargs.items()
                    if name in _ADDRESS_SETTINGS or name.startswith("ssl")}
        settings["retry"] = Retry(NoBackoff(), 0)
        self._listener = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **{**settings, "protocol": 2}))
        self._pubsub = self._listener.pubsub()
        self._reader = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **settings), single_connection_client=True)
        self._local: dict[str, object] = {}
        self.hits = self.misses = self.invalidations = 0
        try:
            self.listener_id = self._subscribe()  # the CLIENT ID the server sends invalidations to
            self._reader.execute_command("CLIENT", "TRACKING", "ON", "REDIRECT", self.listener_id)
        except BaseException:
            self.close()
            raise

    def _subscribe(self) -> int:
        """Return the listener's CLIENT ID, then SUBSCRIBE and wait for its confirmation.

        The id is asked first, on the same connection: once subscribed, a RESP2 connection accepts
        no CLIENT ID (and CLIENT LIST, which would find it by name, is refused on a shared server).
        """
        self._pubsub.execute_command("CLIENT", "ID")
        listener_id = self._pubsub.parse_response(block=True, timeout=5)
        self._pubsub.subscribe(INVALIDATION_CHANNEL)
        confirmation = self._pubsub.get_message(timeout=5)
        if not confirmation or confirmation["type"] != "subscribe":
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {INVALIDATION_CHANNEL}: {confirmation!r}")
        return int(listener_id)

    def _apply(self, message: dict) -> set[str] | None:
        """Drop the keys a message names from local memory; returns them (None: the server flushed all)."""
        if message["type"] != "message":
            return set()
        names = message["data"]
        if names is None:
            self.invalidations += len(self._local)
            self._local.clear()
            return None
        for name in names:
            if self._local.pop(name, _MISSING) is not _MISSING:
                self.invalidations += 1
        return set(names)

    def _drain(self) -> None:
        while (message := self._pubsub.get_message(timeout=0)) is not None:
            self._apply(message)

    def get(self, name: str):
        """The value of `name`: from local memory when it is there and still valid, else one GET."""
        self._drain()
        if name in self._local:
            self.hits += 1
            return self._local[name]
        self.misses += 1
        value = self._reader.get(name)
        self._local[name] = value
        return value

    def __contains__(self, name: str) -> bool:
        """True when `name` would be answered from local memory right now."""
        self._drain()
        return name in self._local

    def wait_invalidated(self, name: str, timeout: float) -> bool:
        """Block until the server's invalidation of `name` arrives, at most `timeout` seconds.

        Returns:
            True when an invalidation naming `name` (or a flush of everything) arrived, else False.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            names = self._apply(message)
            if names is None or name in names:
                return True
        return False

    def close(self) -> None:
        """Close both connections; the server stops tracking this reader."""
        self._pubsub.close()
        self._listener.close()
        self._reader.close()

    def __enter__(self) -> "TrackingCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_MISSING = object()
