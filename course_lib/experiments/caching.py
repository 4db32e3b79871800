"""Measured experiments of chapter 02, each `run_*(...) -> pandas.DataFrame`, and the workload lab widget.

- `run_hit_vs_query`: the slow SQLite query vs a cache-aside hit vs a client-side (tracked) hit;
- `run_expiry_spread`: entries written together, with TTL jitter: over how many seconds they expire;
- `run_workload`: a skewed (Zipf) stream of requests through `cache_aside`: hit rate, queries saved;
- `run_hit_rate`: steady-state hit rate and measured database queries against the cache's size;
- `run_stampede`: N concurrent misses on one key, with and without the per-key lock;
- `run_keys_vs_scan`: PING latency another client sees while KEYS, or SCAN, walks a large keyspace;
- `run_eviction`: the same workload on servers limited by `maxmemory`, one per eviction policy;
- `run_lru_samples`: how close approximated LRU comes to true LRU with 1, 5, 10 `maxmemory-samples`;
- `run_lfu_counters`: OBJECT FREQ after 100 .. 10,000 reads, for several values of `lfu-log-factor`;
- `run_refresh`: callers reading a hot key across its expiry: lock vs early refresh vs stale-while-revalidate;
- `run_deploy`: a deploy that changes the cached shape, with and without a new key version;
- `workload_widget`: the lab, sliders over TTL, skew, policy and request count.

Keys written on the course server: `course:caching:<namespace>:<id>` (strings, JSON) and the
stampede lock `course:caching:lock:<namespace>:<id>`, and `course:caching:spread:<n>` (JSON, with
a TTL), `course:caching:refresh:<id>` and its lock, `course:caching:profile:v<n>:<id>`. KEYS vs
SCAN, the hit rate against size, eviction, LRU sampling and LFU counters run on private
scratch servers (`course_lib.servers.scratch_server`), so the shared server stays small and its
configuration untouched.
"""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import pandas as pd
import redis

from course_lib.caching import (TrackingCache, cache_aside, cache_aside_early, cache_aside_locked, cache_aside_swr,
                                store, versioned_name)
from course_lib.concurrency import run_together
from course_lib.keys import delete_prefix, key
from course_lib.measure import latencies, percentile, summary_ms
from course_lib.pipelines import RoundTripCounter
from course_lib.sample_db import Shop
from course_lib.servers import ServerError, find_binary, scratch_server

POLICIES = ("noeviction", "allkeys-lru", "allkeys-lfu")


def run_hit_vs_query(client, shop: Shop, user_id: int = 42, query_samples: int = 5, hit_samples: int = 2000,
                     cache: Callable = cache_aside, local_cache: Callable = TrackingCache) -> pd.DataFrame:
    """Latency of the slow query, of a cache-aside hit (GET + JSON) and of a client-side hit.

    Args:
        cache: how the report is cached: `cache(client, name)` returns a decorator, as `cache_aside`
            does (the guide's `guide_cache_aside` never caches a missing user's report).
        local_cache: the client-side cache, `local_cache(client)` (default `TrackingCache`).

    Returns:
        One row per way of getting the report: samples, commands sent to Redis per read (counted
        client side: a GET for a cache-aside read, a GET per local miss), median, p95, p99 and max
        in milliseconds.
    """
    warmup = min(10, hit_samples)
    counter = RoundTripCounter(client)
    try:
        report = cache(counter.client, "hitlab")(shop.customer_report)
        report.invalidate(user_id)
        rows = [{"path": "SQLite query", "samples": query_samples, "commands per read": 0.0,
                 **summary_ms(latencies(lambda: shop.customer_report(user_id), query_samples, warmup=1))}]
        report(user_id)
        counter.reset()
        hits = latencies(lambda: report(user_id), hit_samples, warmup=warmup)
        rows.append({"path": "cache-aside hit (GET + JSON)", "samples": hit_samples,
                     "commands per read": sum(counter.commands.values()) / (warmup + hit_samples), **summary_ms(hits)})
        with local_cache(client) as local:
            name = report.key(user_id)
            local.get(name)  # the first read fills local memory
            misses = local.misses
            # "null" when the cache kept nothing (the guide's version and a missing user): a local hit of None
            hits = latencies(lambda: json.loads(local.get(name) or "null"), hit_samples, warmup=warmup)
            rows.append({"path": "client-side hit (local memory)", "samples": hit_samples,
                         "commands per read": (local.misses - misses) / (warmup + hit_samples), **summary_ms(hits)})
        report.invalidate(user_id)
    finally:
        counter.close()
    return pd.DataFrame(rows).set_index("path")


def run_expiry_spread(client, entries: int = 1000, ttl: float = 300.0, jitter: float = 0.2,
                      seed: int = 2) -> pd.Series:
    """Write `entries` entries in one burst with `store` (TTL `ttl`, jitter `jitter`), then read their PTTLs.

    Commands: one pipeline of SET ... PX, one of PTTL (the TTLs the server really holds), one UNLINK.

    Returns:
        How many entries expire in each second from now (index: the second), sorted by second.
    """
    rng = random.Random(seed)
    names = [key("caching", "spread", n) for n in range(entries)]
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            store(pipe, name, {"n": 1}, ttl=ttl, jitter=jitter, rng=rng)
        pipe.execute()
        for name in names:
            pipe.pttl(name)
        remaining = pipe.execute()
    client.unlink(*names)
    seconds = pd.Series([ms // 1000 for ms in remaining], name="entries expiring")
    return seconds.value_counts().sort_index().rename_axis("second")


def zipf_requests(ids: int, requests: int, skew: float, seed: int) -> list[int]:
    """`requests` ids drawn from 1..`ids`, the id of rank k with weight 1/k**skew (Zipf-like).

    `skew` 0 is uniform; around 1 a few ids get most requests, as pages and products do. Which
    ids are popular is shuffled by the same seeded generator: the result depends on the seed only.
    """
    rng = random.Random(seed)
    population = list(range(1, ids + 1))
    rng.shuffle(population)
    weights = [1 / rank ** skew for rank in range(1, ids + 1)]
    return rng.choices(population, weights, k=requests)


def run_workload(client, shop: Shop, requests: int = 10_000, ids: int = 10_000, skew: float = 1.0,
                 ttl: float = 3600.0, seed: int = 7, namespace: str = "lab", warmup: int = 0) -> pd.DataFrame:
    """Serve a Zipf stream of user lookups through `cache_aside`, from an empty cache.

    The first `warmup` requests fill the cache and are not returned; the next `requests` are
    measured. Without a warm-up, and with a TTL longer than the run, a request misses exactly when
    its user is asked for the first time: cold-start misses, not the steady state.

    Returns:
        One row per measured request: `user_id`, `hit` (no database query was needed), `queries`
        (database queries it caused, counted by the `Shop`) and `latency_ms`.
    """
    delete_prefix(client, key("caching", namespace) + ":")
    user = cache_aside(client, namespace, ttl=ttl, jitter=0)(shop.user)
    stream = zipf_requests(ids, warmup + requests, skew, seed)
    for user_id in stream[:warmup]:
        user(user_id)
    rows = []
    for user_id in stream[warmup:]:
        queries = shop.queries
        start = time.perf_counter()
        user(user_id)
        elapsed, queries = (time.perf_counter() - start) * 1000, shop.queries - queries
        rows.append((user_id, queries == 0, queries, elapsed))
    delete_prefix(client, key("caching", namespace) + ":")
    return pd.DataFrame(rows, columns=["user_id", "hit", "queries", "latency_ms"])


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Requests, database queries without and with the cache (as counted), the reduction and the hit rate."""
    requests = len(frame)
    hits, queries = int(frame["hit"].sum()), int(frame["queries"].sum())
    return pd.DataFrame([{
        "requests": requests,
        "db queries without cache": requests,
        "db queries with cache": queries,
        "db load reduction %": round(100 * (1 - queries / requests), 1) if requests else 0.0,
        "hit rate %": round(100 * hits / requests, 1) if requests else 0.0,
    }])


def run_hit_rate(shop: Shop, cache_kbs: Iterable[int] = (128, 512, 2048), requests: int = 4000, ids: int = 2000,
                 skew: float = 1.0, warmup: int | None = None, value_bytes: int = 1000, ttl: float = 3600.0,
                 seed: int = 7, policy: str = "allkeys-lru") -> pd.DataFrame:
    """Steady-state hit rate of cache-aside (`serve_bounded`) against the cache's size, on a private server.

    For each size the server is emptied and given `maxmemory` = its memory in use when empty +
    that many KB (about as many 1 KB entries) with `policy`. `warmup` requests (default: as many
    as measured) fill the cache and are not counted; then `requests` are measured, and the
    database queries they cause are counted by the `Shop`, not inferred from the hits. A short
    `ttl` also lowers the hit rate: an entry that expires between two requests for it is a miss.

    Returns:
        One row per size: entries held at the end, their share of all `ids` (%), hit rate %,
        database queries, and the database load reduction % (1 - queries / requests).

    Raises:
        ServerError: no server binary (the course points at an external server only).
    """
    warmup = requests if warmup is None else warmup
    stream = zipf_requests(ids, warmup + requests, skew, seed)
    rows = []
    with scratch_server(config={"maxmemory-policy": policy}) as server, server.client() as cache:
        for kb in cache_kbs:
            cache.flushall()
            cache.config_set("maxmemory", cache.info("memory")["used_memory"] + kb * 1024)
            serve_bounded(cache, shop, stream[:warmup], value_bytes, ttl)
            frame = serve_bounded(cache, shop, stream[warmup:], value_bytes, ttl)
            queries = int(frame["queries"].sum())
            rows.append({"cache KB": kb, "entries held": cache.dbsize(),
                         "users held %": round(100 * cache.dbsize() / ids, 1),
                         "hit rate %": round(100 * frame["hit"].mean(), 1), "db queries": queries,
                         "db load reduction %": round(100 * (1 - queries / len(frame)), 1)})
    return pd.DataFrame(rows).set_index("cache KB")


def run_stampede(client, shop: Shop, concurrency: int = 10, user_id: int = 7, lock_ttl: float = 10.0) -> pd.DataFrame:
    """`concurrency` threads miss the same cold key at once, with plain and with locked cache-aside.

    The threads start together on a barrier and are all joined (within 60 s). `lock_ttl` is the
    lock's expiry in seconds: shorter than the query, the lock expires while its holder loads and
    the next waiter loads too. Returns one row per variant: how many database queries the misses
    caused (counted by the `Shop`), and the wall time of the burst.
    """
    rows = []
    for label, decorator in (("plain cache-aside", cache_aside),
                             ("with per-key lock", functools.partial(cache_aside_locked, lock_ttl=lock_ttl))):
        report = decorator(client, "stampede")(shop.customer_report)
        report.invalidate(user_id)
        queries = shop.queries
        start = time.perf_counter()
        run_together(lambda _slot: report(user_id), concurrency, timeout=60, what=f"stampede ({label})")
        rows.append({"variant": label, "concurrent misses": concurrency,
                     "db queries": shop.queries - queries, "seconds": time.perf_counter() - start})
        report.invalidate(user_id)
    return pd.DataFrame(rows).set_index("variant")


def ping_loop(port: int) -> None:
    """PING `port` back to back until a line arrives on stdin; then print the samples as JSON.

    Runs in a process of its own (see `run_keys_vs_scan`): a thread of the measuring process
    would also measure how long it waits for Python's GIL. Prints `ready` once connected, then
    `[[monotonic start, seconds], ...]`.
    """
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    samples = []
    with redis.Redis(host="127.0.0.1", port=port) as other:
        other.ping()
        print("ready", flush=True)
        while not stop.is_set():
            start = time.monotonic()
            other.ping()
            samples.append((start, time.monotonic() - start))
    print(json.dumps(samples), flush=True)


def run_keys_vs_scan(keys: int = 500_000, batch: int = 1000, repeat_for: float = 1.0) -> pd.DataFrame:
    """PING latency another client sees while KEYS, then SCAN, looks for 10 keys among `keys` others.

    On a private scratch server: DEBUG POPULATE fills it (loopback only, enabled on course
    servers), ten `course:caching:user:42:*` keys are added, and each method looks for them the
    way the guide's bulk invalidation does. Both walk the whole keyspace; KEYS in one command,
    SCAN in `batch`-sized steps that let other clients' commands run in between.

    Returns:
        One row per method: keys found, one walk's duration, PINGs in flight while it walked, PING
        p99 and max (ms).
    """
    pattern = key("caching", "user", 42, "*")
    methods = {"KEYS": lambda: admin.keys(pattern),
               f"SCAN (COUNT {batch})": lambda: list(admin.scan_iter(match=pattern, count=batch))}
    windows = {}
    with scratch_server() as server, server.client() as admin:
        admin.execute_command("DEBUG", "POPULATE", keys, key("caching", "page"), 10)
        admin.mset({key("caching", "user", 42, part): "cached" for part in range(10)})
        command = [sys.executable, "-c", f"from course_lib.experiments.caching import ping_loop; ping_loop({server.port})"]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as pinger:
            try:
                if pinger.stdout.readline().strip() != "ready":
                    raise RuntimeError("the PING process did not start; run ping_loop by hand to see why")
                for method, walk in methods.items():
                    runs, start = 0, time.monotonic()
                    while runs == 0 or time.monotonic() - start < repeat_for:
                        found = walk()
                        runs += 1
                    windows[method] = (start, time.monotonic(), runs, len(found))
            finally:
                samples, _ = pinger.communicate("stop\n", timeout=60)
        samples = json.loads(samples)
        keyspace = admin.dbsize()
    rows = []
    for method, (start, end, runs, found) in windows.items():
        # every PING in flight during the walks: one sent just before a walk waits for all of it
        pings = [seconds for sent, seconds in samples if sent < end and sent + seconds > start]
        rows.append({"method": method, "keyspace": keyspace, "found": found, "walk_ms": (end - start) / runs * 1000,
                     "pings": len(pings), "ping_p99_ms": percentile(pings, 99) * 1000,
                     "ping_max_ms": max(pings) * 1000})
    return pd.DataFrame(rows).set_index("method")


def serve_bounded(client, shop: Shop, request_ids: Iterable[int], value_bytes: int = 1000,
                  ttl: float = 3600.0, namespace: str = "evict") -> pd.DataFrame:
    """Cache-aside over a server that may be full: a rejected write (OOM) is served from the database.

    Each cached value is the user's row padded to `value_bytes` (think of a rendered profile).

    Returns:
        One row per request: `user_id`, `hit`, `rejected` (SET refused: maxmemory with noeviction),
        `queries` (database queries it caused, counted by the `Shop`) and `latency_ms`.
    """
    rows = []
    for user_id in request_ids:
        name = key("caching", namespace, user_id)
        queries = shop.queries
        start = time.perf_counter()
        hit = client.get(name) is not None
        rejected = False
        if not hit:
            value = json.dumps({**(shop.user(user_id) or {}), "page": "x" * value_bytes})
            try:
                client.set(name, value, px=round(ttl * 1000))
            except redis.exceptions.OutOfMemoryError:
                rejected = True  # the cache is full and may not evict: the request still succeeds
        rows.append((user_id, hit, rejected, shop.queries - queries, (time.perf_counter() - start) * 1000))
    return pd.DataFrame(rows, columns=["user_id", "hit", "rejected", "queries", "latency_ms"])


def shifting_requests(ids: int, requests: int, skew: float, seed: int) -> list[int]:
    """Two Zipf halves with different popular ids: what was hot in the morning is not hot in the afternoon."""
    return (zipf_requests(ids, requests // 2, skew, seed)
            + zipf_requests(ids, requests - requests // 2, skew, seed + 1))


def run_eviction(shop: Shop, policies: Iterable[str] = POLICIES, cache_kb: int = 1024, requests: int = 6000,
                 ids: int = 4000, skew: float = 1.0, value_bytes: int = 1000, seed: int = 11,
                 ttl: float = 3600.0) -> pd.DataFrame:
    """The same shifting workload against one fresh scratch server per `maxmemory-policy`.

    Each server gets `maxmemory` = its memory in use when empty + `cache_kb`, so every engine has
    room for roughly the same number of entries.

    Returns:
        One row per policy: hit rate, rejected writes, evicted keys, keys held at the end.

    Raises:
        ServerError: no server binary (the course points at an external server only).
    """
    request_ids = shifting_requests(ids, requests, skew, seed)
    binary = find_binary()
    rows = []
    for policy in policies:
        with scratch_server(config={"maxmemory-policy": policy}, binary=binary) as server, server.client() as cache:
            cache.config_set("maxmemory", cache.info("memory")["used_memory"] + cache_kb * 1024)
            frame = serve_bounded(cache, shop, request_ids, value_bytes, ttl)
            rows.append({"policy": policy, "requests": len(frame),
                         "hit rate %": round(100 * frame["hit"].mean(), 1),
                         "rejected writes": int(frame["rejected"].sum()),
                         "evicted keys": int(cache.info("stats")["evicted_keys"]),
                         "keys held": cache.dbsize()})
    return pd.DataFrame(rows).set_index("policy")


def run_lru_samples(samples: Iterable[int] = (1, 5, 10), keys: int = 10_000, new_keys: int = 2500,
                    policy: str = "allkeys-lru", value_bytes: int = 100) -> pd.DataFrame:
    """How close approximated LRU comes to true LRU, for each `maxmemory-samples`, on a private server.

    For each setting the server is emptied and given `keys` keys whose last access is known:
    RESTORE ... IDLETIME gives key i an idle time of `keys - i` seconds (key 0 is the least
    recently used), so no run has to wait for real time to pass. `maxmemory` is then set to the
    memory in use and `new_keys` more keys are written: each write evicts. True LRU would evict
    exactly the oldest of the old keys. Redis instead samples `maxmemory-samples` keys per
    eviction (into a pool of 16 candidates) and evicts the idlest it saw.

    Args:
        policy: the `maxmemory-policy`; `allkeys-random` shows what no sampling of idle time gives.

    Returns:
        One row per setting: old keys evicted (E), the share of them that were among the E
        oldest (% of true LRU's choice; 100 is true LRU), and what random eviction would give (E / keys).

    Raises:
        ServerError: no server binary (the course points at an external server only).
    """
    value = "x" * value_bytes
    rows = []
    with scratch_server(config={"maxmemory-policy": policy}) as server, server.client() as cache:
        template = key("caching", "template")
        cache.set(template, value)
        payload = cache.dump(template)
        for count in samples:
            cache.flushall()
            cache.config_set("maxmemory", 0)
            cache.config_set("maxmemory-samples", count)
            with cache.pipeline(transaction=False) as pipe:
                for n in range(keys):
                    pipe.restore(key("caching", "old", n), 0, payload, idletime=keys - n)
                pipe.execute()
                cache.config_set("maxmemory", cache.info("memory")["used_memory"])
                for n in range(new_keys):
                    pipe.set(key("caching", "new", n), value)
                pipe.execute()
                for n in range(keys):
                    pipe.exists(key("caching", "old", n))
                evicted = [n for n, alive in enumerate(pipe.execute()) if not alive]
            cache.config_set("maxmemory", 0)
            oldest = sum(n < len(evicted) for n in evicted)
            rows.append({"maxmemory-samples": count, "old keys evicted": len(evicted),
                         "evicted among the oldest %": round(100 * oldest / max(1, len(evicted)), 1),
                         "random eviction would give %": round(100 * len(evicted) / keys, 1)})
    return pd.DataFrame(rows).set_index("maxmemory-samples")


def run_lfu_counters(log_factors: Iterable[int] = (0, 1, 10), reads: Iterable[int] = (100, 1000, 10_000)) -> pd.DataFrame:
    """OBJECT FREQ of a key read `reads` times, for each `lfu-log-factor`, on a private `allkeys-lfu` server.

    The LFU counter is 8 bits (0-255) and grows logarithmically: each access increments it with
    probability 1 / ((counter - 5) * lfu-log-factor + 1). A small factor saturates it quickly,
    after which LFU cannot tell a warm key from a hot one. Each key holds a string that is not
    an integer: Redis 7.0 shares one object among keys holding the same small integer (when
    `maxmemory` is 0), so their counters would be one.

    Returns:
        One row per factor, one column per read count: the counter after that many GETs.

    Raises:
        ServerError: no server binary (the course points at an external server only).
    """
    reads = tuple(reads)
    rows = []
    with scratch_server(config={"maxmemory-policy": "allkeys-lfu"}) as server, server.client() as cache:
        for factor in log_factors:
            cache.config_set("lfu-log-factor", factor)
            row = {"lfu-log-factor": factor}
            for count in reads:
                name = key("caching", "hot", factor, count)
                cache.set(name, "cached page")
                with cache.pipeline(transaction=False) as pipe:
                    for _ in range(count):
                        pipe.get(name)
                    pipe.execute()
                row[f"after {count} reads"] = cache.object("freq", name)
            rows.append(row)
    return pd.DataFrame(rows).set_index("lfu-log-factor")


REFRESH_VARIANTS = ("per-key lock", "early refresh (XFetch)", "stale-while-revalidate")


def run_refresh(client, shop: Shop, callers: int = 8, ttl: float = 3.0, duration: float = 3.5, pace: float = 0.03,
                beta: float = 1.0, stale: float = 2.0, user_id: int = 5,
                variants: Iterable[str] = REFRESH_VARIANTS) -> pd.DataFrame:
    """`callers` app servers read one hot report every `pace` s while its entry expires, once per variant.

    Each variant starts from an entry just loaded (fresh for `ttl` s); the callers then read for
    `duration` s (> `ttl`), so the expiry falls inside the run. `per-key lock` is
    `cache_aside_locked`, `early refresh (XFetch)` is `cache_aside_early` with `beta`,
    `stale-while-revalidate` is `cache_aside_swr` with `stale` (its reloads run on a one-thread
    pool, joined before the row is written). The callers are threads released together, all
    joined within 60 s; `pace` is the gap between one caller's requests (the traffic), not a wait
    for an event.

    Returns:
        One row per variant: requests, database queries during the run (counted by the `Shop`),
        requests that waited for the database (longer than half the shortest load of the variant,
        warm-up included, and overlapping a load: a moment when the machine stalls every thread
        is not a wait for the database), median and max latency seen by callers (ms), and that
        shortest load (ms).
    """
    factories = {"per-key lock": lambda: cache_aside_locked(client, "refresh", ttl=ttl, jitter=0),
                 "early refresh (XFetch)": lambda: cache_aside_early(client, "refresh", ttl=ttl, beta=beta),
                 "stale-while-revalidate": lambda: cache_aside_swr(client, "refresh", ttl=ttl, stale=stale,
                                                                   submit=pool.submit)}
    rows = []
    for variant in variants:
        loads: list[tuple[float, float]] = []  # (start, end) of each database query

        def timed_report(uid: int):
            began = time.monotonic()
            try:
                return shop.customer_report(uid)
            finally:
                loads.append((began, time.monotonic()))

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh") as pool:
            report = factories[variant]()(timed_report)
            report.invalidate(user_id)
            report(user_id)  # the warm-up load: the entry is fresh for `ttl` seconds from now
            queries = shop.queries
            end = time.monotonic() + duration

            def read_until_end(_slot: int) -> list[tuple[float, float]]:
                seen = []
                while time.monotonic() < end:
                    began = time.monotonic()
                    report(user_id)
                    seen.append((began, time.monotonic()))
                    time.sleep(pace)
                return seen

            seen = [s for caller in run_together(read_until_end, callers, timeout=60, what=f"refresh ({variant})")
                    for s in caller]
        # A caller that waits for a load waits most of it (the callers all miss within `pace` of each
        # other); a hit takes a fraction of a millisecond. Half the shortest load separates the two.
        shortest = min(stop - start for start, stop in loads)
        durations = [stop - start for start, stop in seen]
        waited = sum(duration > shortest / 2 and any(start < load_end and stop > load_start
                                                     for load_start, load_end in loads)
                     for (start, stop), duration in zip(seen, durations))
        rows.append({"variant": variant, "requests": len(seen), "db queries": shop.queries - queries,
                     "waited for the database": waited,
                     "median_ms": percentile(durations, 50) * 1000, "max_ms": max(durations) * 1000,
                     "shortest load_ms": shortest * 1000})
        report.invalidate(user_id)
    return pd.DataFrame(rows).set_index("variant")


def new_profile(shop: Shop, user_id: int) -> dict | None:
    """What the new release caches for a user: `display_name` replaces `name` (a changed shape)."""
    row = shop.user(user_id)
    return None if row is None else {"id": row["id"], "display_name": row["name"].title(), "country": row["country"]}


def run_deploy(client, shop: Shop, users: int = 50, old_version: int = 1, new_version: int = 2,
               ttl: float = 300.0) -> pd.Series:
    """A deploy that changes the cached shape of a profile, while old app servers still run.

    The old release caches `shop.user` rows under `versioned_name("profile", old_version)` for
    `users` users; the new release caches `new_profile` under `new_version`, and both read
    every user after the deploy (a rolling deploy: both run at once).

    Returns:
        Reads by the new release that got an old-shaped value (no `display_name`), reads by the
        old release that got a new-shaped one (no `name`), database queries the new release
        caused, old-version entries left, and how many of those carry a TTL of at most `ttl`.
    """
    delete_prefix(client, key("caching", "profile") + ":")
    old = cache_aside(client, versioned_name("profile", old_version), ttl=ttl, jitter=0)(shop.user)
    new = cache_aside(client, versioned_name("profile", new_version), ttl=ttl, jitter=0)(
        functools.partial(new_profile, shop))
    ids = range(1, users + 1)
    for user_id in ids:
        old(user_id)
    queries = shop.queries
    new_seen = [new(user_id) for user_id in ids]
    new_queries = shop.queries - queries
    old_seen = [old(user_id) for user_id in ids]
    with client.pipeline(transaction=False) as pipe:
        for user_id in ids:
            pipe.pttl(old.key(user_id))
        remaining = pipe.execute()
    delete_prefix(client, key("caching", "profile") + ":")
    # None is a cached "no such user", of either shape
    return pd.Series({"new release read an old shape": sum(row is not None and "display_name" not in row
                                                           for row in new_seen),
                      "old release read a new shape": sum(row is not None and "name" not in row for row in old_seen),
                      "db queries by the new release": new_queries,
                      "old entries left": sum(ms != -2 for ms in remaining),
                      "old entries expiring on their own": sum(0 < ms <= ttl * 1000 for ms in remaining)})


def workload_widget(client, shop: Shop):
    """The workload lab: TTL, skew, cache size and policy, request count -> hit rate, queries saved, latencies.

    "no limit" runs `run_workload` on the course server; a policy runs `serve_bounded` on a
    scratch server limited to the chosen size. Nothing runs until the button is pressed.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    style = {"description_width": "11em"}
    layout = w.Layout(width="34em")
    ttl = w.FloatLogSlider(value=60, base=10, min=-2, max=2, description="TTL (s)", style=style, layout=layout)
    skew = w.FloatSlider(value=1.0, min=0.0, max=1.5, step=0.1, description="popularity skew", style=style, layout=layout)
    policy = w.Dropdown(options=("no limit",) + POLICIES, value="no limit", description="maxmemory policy",
                        style=style, layout=layout)
    cache_kb = w.IntSlider(value=1024, min=256, max=8192, step=256, description="cache size (KB)", style=style,
                           layout=layout)
    requests = w.IntSlider(value=5000, min=500, max=20_000, step=500, description="requests", style=style, layout=layout)
    run = w.Button(description="Run", button_style="primary")
    out = w.Output()

    def on_run(_) -> None:
        out.clear_output()
        with out:
            print("running...")
        try:
            frame, where = _lab_run(client, shop, ttl.value, skew.value, policy.value, cache_kb.value, requests.value)
        except ServerError as exc:
            out.clear_output()
            with out:
                print(f"This policy needs a private server and none can be started here: {exc}")
            return
        out.clear_output()
        with out:
            print(f"{requests.value} requests, {where}")
            display(summarize(frame))
            fig, ax = plt.subplots(figsize=(7, 3))
            bins = [x / 100 for x in range(0, 101)]
            for hit, label in ((True, "hits"), (False, "misses")):
                part = frame.loc[frame["hit"] == hit, "latency_ms"].clip(upper=1.0)
                ax.hist(part, bins=bins, alpha=0.6, label=f"{label} ({len(part)})")
            ax.set_xlabel("latency (ms, 1 ms = 1 ms or more)")
            ax.set_ylabel("requests")
            ax.legend()
            plt.show()

    run.on_click(on_run)
    return w.VBox([ttl, skew, policy, cache_kb, requests, run, out])


def _lab_run(client, shop: Shop, ttl: float, skew: float, policy: str, cache_kb: int,
             requests: int) -> tuple[pd.DataFrame, str]:
    if policy == "no limit":
        frame = run_workload(client, shop, requests, skew=skew, ttl=ttl, seed=7, warmup=requests)
        return frame, "course server, no memory limit, after as many requests to warm it up"
    with scratch_server(config={"maxmemory-policy": policy}) as server, server.client() as cache:
        cache.config_set("maxmemory", cache.info("memory")["used_memory"] + cache_kb * 1024)
        frame = serve_bounded(cache, shop, zipf_requests(10_000, requests, skew, 7), ttl=ttl)
    return frame, f"scratch server, maxmemory {cache_kb} KB over empty, {policy}"
