"""Caching patterns of chapter 02: cache-aside, write-through, invalidation, stampede protection, client-side caching.

`guide_cache_aside` is the guide's version, kept to show live what it forgets.

Keys written (all strings):
- `course:caching:<name>:<arg>...`: a cached result as JSON; `null` is a cached "no such row"
  (negative caching), kept for a shorter time than a real value (the guide's version caches no `null`);
- `course:caching:lock:<name>:<arg>...`: a random token, the per-key loading lock of
  `cache_aside_locked`, expiring on its own (PX) if its holder dies.

Bulk invalidation uses `course_lib.keys.delete_prefix` (SCAN + UNLINK in batches, every primary
of a cluster): there is deliberately no second copy of it here.
"""

from __future__ import annotations

import functools
import json
import random
import secrets
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
        # A name of its own, to find the listener's id: a subscribed RESP2 connection accepts no CLIENT ID.
        self._listener_name = f"course-invalidations-{secrets.token_hex(8)}"
        self._listener = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **{**settings, "protocol": 2, "client_name": self._listener_name}))
        self._pubsub = self._listener.pubsub()
        self._reader = redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **settings), single_connection_client=True)
        self._local: dict[str, object] = {}
        self.hits = self.misses = self.invalidations = 0
        try:
            listener_id = self._subscribe()
            self._reader.execute_command("CLIENT", "TRACKING", "ON", "REDIRECT", listener_id)
        except BaseException:
            self.close()
            raise

    def _subscribe(self) -> int:
        """SUBSCRIBE, wait for its confirmation, and return the listener's CLIENT ID."""
        self._pubsub.subscribe(INVALIDATION_CHANNEL)
        confirmation = self._pubsub.get_message(timeout=5)
        if not confirmation or confirmation["type"] != "subscribe":
            raise redis.ConnectionError(f"no confirmation of SUBSCRIBE {INVALIDATION_CHANNEL}: {confirmation!r}")
        for entry in self._reader.client_list(_type="pubsub"):
            if entry["name"] == self._listener_name:
                return int(entry["id"])
        raise redis.ConnectionError("the invalidation listener is not in CLIENT LIST")

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
