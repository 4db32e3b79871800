"""Chapter 02: caching patterns, experiments and exercise checkers, against real servers and a real SQLite database."""

import functools
import json
import os
import random
import re
import secrets
import threading
import time

import pandas as pd
import pytest
import redis

from course_lib import caching
from course_lib.caching import (TrackingCache, cache_aside, cache_aside_early, cache_aside_locked, cache_aside_swr,
                                guide_cache_aside, jittered_ttl, release_lock, store, update_then_invalidate,
                                versioned_name, write_through)
from course_lib.concurrency import run_together, wait_for
from course_lib.connection import connect, credentials
from course_lib.exercises import evaluate
from course_lib.exercises import caching as checkers
from course_lib.exercises.solutions import caching as solutions
from course_lib.experiments import caching as experiments
from course_lib.keys import delete_prefix, key
from course_lib.sample_db import USERS, Shop


@pytest.fixture(scope="module")
def shop():
    with Shop() as working_copy:
        yield working_copy


def counting(value):
    calls = []

    def load(*args):
        calls.append(args)
        return value

    return load, calls


# --- TTL, store ----------------------------------------------------------------------------------

def test_jittered_ttl_spreads_upwards_only_and_is_seedable():
    values = [jittered_ttl(100, 0.2, random.Random(1)) for _ in range(3)]
    assert values[0] == values[1] == values[2]
    spread = [jittered_ttl(100, 0.2, random.Random(seed)) for seed in range(200)]
    assert min(spread) >= 100_000 and max(spread) <= 120_000 and len(set(spread)) > 150
    assert jittered_ttl(100, 0) == 100_000 and jittered_ttl(0.0001, 0) == 1


def test_store_sets_json_with_expiry_and_a_shorter_one_for_none(r):
    assert store(r, key("caching", "t", 1), {"a": 1}, ttl=300, jitter=0) == 300_000
    assert json.loads(r.get(key("caching", "t", 1))) == {"a": 1}
    assert 299_000 < r.pttl(key("caching", "t", 1)) <= 300_000
    assert store(r, key("caching", "t", 2), None, ttl=300, jitter=0, negative_ttl=5) == 5000
    assert r.get(key("caching", "t", 2)) == "null" and 0 < r.pttl(key("caching", "t", 2)) <= 5000


# --- cache-aside ---------------------------------------------------------------------------------

def test_cache_aside_loads_once_then_hits(r):
    load, calls = counting({"id": 1})
    get = cache_aside(r, "user", ttl=60)(load)
    assert get(1) == {"id": 1} and get(1) == {"id": 1} and calls == [(1,)]
    assert get.key(1) == "course:caching:user:1" and 60_000 <= r.pttl(get.key(1)) <= 66_000
    assert get.invalidate(1) == 1 and get(1) == {"id": 1} and len(calls) == 2


def test_cache_aside_caches_misses_too(r):
    load, calls = counting(None)
    get = cache_aside(r, "user", ttl=300, negative_ttl=10, jitter=0)(load)
    assert [get(99) for _ in range(5)] == [None] * 5 and len(calls) == 1
    assert 0 < r.pttl(get.key(99)) <= 10_000


def test_the_guides_cache_aside_sends_every_request_for_a_missing_row_to_the_database(r, shop):
    """The failure the chapter shows live: no SET for a missing row."""
    guide = guide_cache_aside(r, "guide")(shop.user)
    queries = shop.queries
    assert [guide(USERS + 1) for _ in range(5)] == [None] * 5 and shop.queries - queries == 5
    assert guide(1)["name"] == "user 1" and guide(1)["name"] == "user 1" and shop.queries - queries == 6
    assert 3590 <= r.ttl(guide.key(1)) <= 3600 and r.exists(guide.key(USERS + 1)) == 0


def test_cache_aside_on_the_cluster_and_bulk_invalidation_across_primaries(rc):
    load, calls = counting("v")
    get = cache_aside(rc, "page")(load)
    for n in range(50):
        get(n)
    assert len({rc.keyslot(get.key(n)) for n in range(50)}) > 10
    assert delete_prefix(rc, key("caching", "page") + ":") == 50
    get(0)
    assert len(calls) == 51


# --- stampede ------------------------------------------------------------------------------------

def burst(get, arg, n):
    return run_together(lambda _slot: get(arg), n, timeout=60, what="cache burst")


def test_locked_cache_aside_loads_once_for_concurrent_misses(r, shop):
    get = cache_aside_locked(r, "report")(shop.customer_report)
    queries = shop.queries
    results = burst(get, 11, 8)
    assert shop.queries - queries == 1 and len(results) == 8 and all(res == results[0] for res in results)
    assert r.exists(key("caching", "lock", "report", 11)) == 0


def test_plain_cache_aside_stampedes(r, shop):
    get = cache_aside(r, "report")(shop.customer_report)
    queries = shop.queries
    burst(get, 12, 6)
    assert shop.queries - queries > 1


def test_a_waiter_gives_up_on_a_stuck_lock_and_loads_itself(r):
    load, calls = counting("fresh")
    get = cache_aside_locked(r, "report", wait=0.05, lock_ttl=30)(load)
    r.set(key("caching", "lock", "report", 5), "someone else", px=30_000)
    assert get(5) == "fresh" and len(calls) == 1
    assert r.get(key("caching", "lock", "report", 5)) == "someone else"


def test_a_crashed_holders_lock_expires_and_the_next_caller_loads(r):
    load, calls = counting("v")
    get = cache_aside_locked(r, "report", wait=10)(load)
    r.set(key("caching", "lock", "report", 6), "crashed holder", px=100)
    assert get(6) == "v" and len(calls) == 1
    assert r.exists(key("caching", "lock", "report", 6)) == 0


def test_release_lock_deletes_only_its_own_token(r):
    lock = key("caching", "lock", "x")
    r.set(lock, "mine")
    assert release_lock(r, lock, "theirs") is False and r.get(lock) == "mine"
    assert release_lock(r, lock, "mine") is True and r.exists(lock) == 0
    assert release_lock(r, lock, "mine") is False


# --- early refresh, stale-while-revalidate, versioned keys ---------------------------------------

class Draws(random.Random):
    """A generator whose `random()` returns the given values in turn: an XFetch draw chosen by the test."""

    def __init__(self, *values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_early_refresh_stores_the_load_time_and_reloads_only_when_the_draw_reaches_the_remaining_ttl(r):
    load, calls = counting({"n": 1})
    # -ln(1 - 0.0) = 0: never early; -ln(1 - 0.999999) is about 13.8 load times: reloads now
    get = cache_aside_early(r, "early", ttl=60, beta=1.0, rng=Draws(0.0, 0.0, 0.999999))(load)
    assert get(1) == {"n": 1} and len(calls) == 1  # a miss loads
    entry = json.loads(r.get(get.key(1)))
    assert entry["value"] == {"n": 1} and entry["delta"] >= 0 and 59_000 < r.pttl(get.key(1)) <= 60_000
    r.set(get.key(1), json.dumps({"value": {"n": 0}, "delta": 1.0}), px=5000)  # 5 s left, loads take 1 s
    assert get(1) == {"n": 0} and len(calls) == 1  # draw 0: served
    assert get(1) == {"n": 0} and len(calls) == 1  # draw 0 again
    assert get(1) == {"n": 1} and len(calls) == 2 and r.pttl(get.key(1)) > 59_000  # 13.8 s >= 5 s: reloaded
    assert r.exists(key("caching", "lock", "early", 1)) == 0


def test_early_refresh_serves_the_current_value_while_another_caller_reloads(r):
    load, calls = counting("new")
    get = cache_aside_early(r, "early", ttl=60, beta=1.0, rng=Draws(0.999999))(load)
    r.set(get.key(2), json.dumps({"value": "old", "delta": 1.0}), px=5000)
    r.set(key("caching", "lock", "early", 2), "another caller", px=10_000)
    assert get(2) == "old" and calls == [] and r.get(key("caching", "lock", "early", 2)) == "another caller"


def test_early_refresh_with_beta_0_never_reloads_before_the_expiry(r):
    load, calls = counting("v")
    get = cache_aside_early(r, "early", ttl=60, beta=0)(load)
    r.set(get.key(3), json.dumps({"value": "old", "delta": 100.0}), px=50)
    assert [get(3) for _ in range(20)] == ["old"] * 20 and calls == []


def test_stale_while_revalidate_serves_the_stale_value_and_reloads_once_in_the_background(r):
    load, calls = counting("new")
    jobs = []
    get = cache_aside_swr(r, "swr", ttl=60, stale=30, submit=jobs.append)(load)
    r.set(get.key(1), json.dumps("fresh"), px=50_000)  # 50 s left > 30 s stale window: fresh
    assert get(1) == "fresh" and jobs == []
    r.set(get.key(1), json.dumps("old"), px=20_000)  # in the stale window
    assert [get(1) for _ in range(5)] == ["old"] * 5 and len(jobs) == 1 and calls == []  # one reload, no waiting
    assert r.exists(key("caching", "lock", "swr", 1)) == 1
    jobs[0]()
    assert calls == [(1,)] and get(1) == "new" and 89_000 < r.pttl(get.key(1)) <= 90_000
    assert r.exists(key("caching", "lock", "swr", 1)) == 0


def test_stale_while_revalidate_releases_the_lock_when_the_reload_fails_and_loads_a_miss_in_the_caller(r):
    def failing(*args):
        raise RuntimeError("database down")

    jobs = []
    get = cache_aside_swr(r, "swr", ttl=60, stale=30, submit=jobs.append)(failing)
    r.set(get.key(2), json.dumps("old"), px=10_000)
    assert get(2) == "old" and len(jobs) == 1
    with pytest.raises(RuntimeError):
        jobs[0]()
    assert r.exists(key("caching", "lock", "swr", 2)) == 0 and get(2) == "old" and len(jobs) == 2  # tried again
    load, calls = counting("v")
    assert cache_aside_swr(r, "swr", ttl=60, stale=30, submit=jobs.append)(load)(3) == "v" and calls == [(3,)]


def test_stale_while_revalidate_default_runs_the_reload_in_a_thread(r):
    loaded = threading.Event()

    def load(*args):
        loaded.set()
        return "new"

    get = cache_aside_swr(r, "swr", ttl=60, stale=30)(load)
    r.set(get.key(4), json.dumps("old"), px=1000)
    assert get(4) == "old" and loaded.wait(timeout=10)
    for thread in threading.enumerate():
        if thread.name == "cache refresh":
            thread.join(timeout=10)  # it stores the value and releases the lock with `r`: before `r` closes
    assert get(4) == "new" and r.exists(key("caching", "lock", "swr", 4)) == 0


def test_versioned_names_keep_two_shapes_apart(r):
    assert versioned_name("profile", 2) == "profile:v2"
    v1 = cache_aside(r, versioned_name("profile", 1))(lambda uid: {"name": "Ada"})
    v2 = cache_aside(r, versioned_name("profile", 2))(lambda uid: {"display_name": "Ada"})
    assert v1(7) == {"name": "Ada"} and v2(7) == {"display_name": "Ada"} and v1(7) == {"name": "Ada"}
    assert v2.key(7) == "course:caching:profile:v2:7" and r.pttl(v1.key(7)) > 0


# --- writes --------------------------------------------------------------------------------------

def test_write_through_and_its_race_between_two_writers(r):
    db = {"name": "old"}
    name = key("caching", "user", 1)

    def write(value):
        def run():
            db["name"] = value
            return dict(db)
        return run

    assert write_through(r, name, write("new")) == {"name": "new"} and json.loads(r.get(name)) == {"name": "new"}
    # A and B interleaved: A writes the database, B writes the database and the cache, then A the cache.
    a_row = write("A")()
    write_through(r, name, write("B"))
    store(r, name, a_row, ttl=300)
    assert db == {"name": "B"} and json.loads(r.get(name)) == {"name": "A"}  # stale until the TTL


def test_update_then_invalidate_cannot_leave_an_older_value(r, shop):
    get = cache_aside(r, "user")(shop.user)
    assert get(3)["name"] == "user 3"
    a_row = shop.update_user(3, "A")
    assert update_then_invalidate(r, get.key(3), lambda: shop.update_user(3, "B"))["name"] == "B"
    r.delete(get.key(3))  # writer A's invalidation, arriving last
    assert a_row["name"] == "A" and get(3)["name"] == "B"
    assert update_then_invalidate(r, get.key(3), lambda: shop.delete_user(3)) is True
    assert get(3) is None


# --- client-side caching -------------------------------------------------------------------------

def gets(client):
    return client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)


def test_tracking_cache_serves_locally_and_is_invalidated_by_other_writers(r):
    name = key("caching", "tracked", 1)
    r.set(name, "v1")
    with TrackingCache(r) as local:
        assert local.get(name) == "v1" and (local.hits, local.misses) == (0, 1)
        before = gets(r)
        assert [local.get(name) for _ in range(100)] == ["v1"] * 100
        assert gets(r) == before and local.hits == 100 and name in local
        r.set(name, "v2")
        assert local.wait_invalidated(name, timeout=5) is True
        assert name not in local and local.invalidations == 1 and local.get(name) == "v2"


def test_tracking_cache_tracks_missing_keys_flushes_and_times_out(r):
    missing, other = key("caching", "tracked", 2), key("caching", "tracked", 3)
    with TrackingCache(r) as local:
        assert local.get(missing) is None and missing in local
        assert local.wait_invalidated(missing, timeout=0.05) is False
        r.set(missing, "now")
        assert local.wait_invalidated(missing, timeout=5) and local.get(missing) == "now"
        r.set(other, "x")
        local.get(other)
        r.execute_command("FLUSHDB")
        assert local.wait_invalidated(other, timeout=5) is True and other not in local and missing not in local


def test_tracking_cache_connections_are_closed(r):
    def listeners():
        return {int(c["id"]) for c in r.client_list(_type="pubsub")}

    local = TrackingCache(r)
    assert local.listener_id in listeners()
    local.close()
    wait_for(lambda: local.listener_id not in listeners(), 5, "the server to see the listener close")


def test_redis_py_builtin_cache_refuses_servers_older_than_7_4(r):
    from course_lib.connection import server_identity

    engine, version, _ = server_identity(r)
    if engine == "Redis" and tuple(map(int, version.split(".")[:2])) >= (7, 4):
        pytest.skip("this server accepts redis-py's built-in cache")
    from redis.cache import CacheConfig

    kwargs = {k: r.connection_pool.connection_kwargs[k] for k in ("host", "port")} | credentials(r)
    with pytest.raises(redis.ConnectionError, match="7.4"):
        redis.Redis(protocol=3, cache_config=CacheConfig(), **kwargs).ping()


# --- experiments ---------------------------------------------------------------------------------

def test_hit_vs_query(r, shop):
    frame = experiments.run_hit_vs_query(r, shop, query_samples=3, hit_samples=300)
    assert list(frame.index) == ["SQLite query", "cache-aside hit (GET + JSON)", "client-side hit (local memory)"]
    assert frame.loc["SQLite query", "median_ms"] > 10 * frame.loc["cache-aside hit (GET + JSON)", "median_ms"]
    assert list(frame["commands per read"]) == [0.0, 1.0, 0.0]
    assert r.exists(key("caching", "hitlab", 42)) == 0


def cache_off(client, name):
    """A deploy that turned the cache off: every read runs the query."""
    def decorate(load):
        uncached = functools.wraps(load)(lambda *args: load(*args))
        uncached.key = lambda *args: key("caching", name, *args)
        uncached.invalidate = lambda *args: 0
        return uncached

    return decorate


class ForgetfulTrackingCache(TrackingCache):
    """A client-side cache that keeps nothing: every read is a GET."""

    def get(self, name):
        self._local.clear()
        return super().get(name)


def test_hit_vs_query_verdicts_fail_when_the_cache_does_not_cache(r, shop):
    off = experiments.run_hit_vs_query(r, shop, query_samples=2, hit_samples=3, cache=cache_off)
    hit = off.loc["cache-aside hit (GET + JSON)"]
    assert not off.loc["SQLite query", "median_ms"] >= 10 * hit["p95_ms"]  # notebook: hit 10x faster
    forgetful = experiments.run_hit_vs_query(r, shop, query_samples=1, hit_samples=300,
                                             local_cache=ForgetfulTrackingCache)
    local = forgetful.loc["client-side hit (local memory)"]
    assert local["commands per read"] == 1.0  # notebook: a client-side hit sends nothing
    assert not forgetful.loc["cache-aside hit (GET + JSON)", "median_ms"] >= 3 * local["median_ms"]


def test_expiry_spread_with_and_without_jitter(r):
    spread = experiments.run_expiry_spread(r, entries=1000, ttl=300, jitter=0.2)
    assert spread.sum() == 1000 and len(spread) > 50 and spread.index.min() >= 299 and spread.index.max() <= 360
    assert list(experiments.run_expiry_spread(r, entries=1000, ttl=300, jitter=0)) == [1000]  # notebook: > 50 s
    assert r.exists(key("caching", "spread", 0)) == 0


def test_zipf_requests_are_deterministic_and_skewed():
    a = experiments.zipf_requests(1000, 5000, 1.0, seed=3)
    assert a == experiments.zipf_requests(1000, 5000, 1.0, seed=3) != experiments.zipf_requests(1000, 5000, 1.0, seed=4)
    assert set(a) <= set(range(1, 1001))
    top = max(a.count(n) for n in set(a))
    uniform = experiments.zipf_requests(1000, 5000, 0.0, seed=3)
    assert top > 5 * max(uniform.count(n) for n in set(uniform))


def test_workload_without_warm_up_counts_first_requests_and_queries_are_counted(r, shop):
    frame = experiments.run_workload(r, shop, requests=2000, ids=1000, skew=1.0, seed=5)
    distinct = len(set(experiments.zipf_requests(1000, 2000, 1.0, 5)))
    summary = experiments.summarize(frame).iloc[0]
    assert summary["db queries with cache"] == distinct == frame["queries"].sum() and summary["requests"] == 2000
    assert summary["hit rate %"] == summary["db load reduction %"] == round(100 * (2000 - distinct) / 2000, 1)
    assert r.exists(key("caching", "lab", 1)) == 0
    warm = experiments.run_workload(r, shop, requests=2000, ids=1000, skew=1.0, seed=5, warmup=2000)
    stream = experiments.zipf_requests(1000, 4000, 1.0, 5)
    assert warm["queries"].sum() == len(set(stream[2000:]) - set(stream[:2000]))  # only users new after the warm-up


def test_hit_rate_reaches_80_percent_with_a_big_cache_only(shop):
    frame = experiments.run_hit_rate(shop, cache_kbs=(128, 2048))
    assert frame.loc[2048, "db load reduction %"] >= 80 and frame.loc[128, "db load reduction %"] < 60  # notebook
    assert not frame.loc[2048, "db load reduction %"] < 60  # a 128 KB limit not applied would fail the second
    assert (frame["db queries"] > 0).all() and frame.loc[128, "entries held"] < frame.loc[2048, "entries held"]
    # Degraded: a short TTL (entries expire between two requests for them), and only a tiny cache.
    short = experiments.run_hit_rate(shop, cache_kbs=(2048,), requests=2000, ttl=0.01)
    assert not short.loc[2048, "db load reduction %"] >= 80
    tiny = experiments.run_hit_rate(shop, cache_kbs=(128,), requests=2000)
    assert not tiny["db load reduction %"].max() >= 80


def test_stampede_experiment(r, shop):
    frame = experiments.run_stampede(r, shop, concurrency=6)
    assert frame.loc["with per-key lock", "db queries"] == 1
    assert frame.loc["plain cache-aside", "db queries"] > 1
    # Degraded: a lock that expires long before the query ends (ms taken for s), and a single caller.
    assert experiments.run_stampede(r, shop, concurrency=6, lock_ttl=0.001).loc["with per-key lock", "db queries"] > 1
    assert experiments.run_stampede(r, shop, concurrency=1).loc["plain cache-aside", "db queries"] == 1


def test_keys_blocks_other_clients_longer_than_scan():
    frame = experiments.run_keys_vs_scan(keys=300_000, repeat_for=0.4)
    assert list(frame["found"]) == [10, 10] and list(frame["keyspace"]) == [300_010, 300_010]
    assert frame.loc["KEYS", "ping_p99_ms"] > 5 * frame.loc["SCAN (COUNT 1000)", "ping_p99_ms"]


def test_keys_vs_scan_verdict_fails_for_one_giant_scan():
    frame = experiments.run_keys_vs_scan(keys=300_000, batch=10_000_000, repeat_for=0.4)
    assert list(frame.index) == ["KEYS", "SCAN (COUNT 10000000)"] and list(frame["found"]) == [10, 10]
    assert not frame.loc["KEYS", "ping_p99_ms"] >= 5 * frame.loc["SCAN (COUNT 10000000)", "ping_p99_ms"]


def test_eviction_policies(shop):
    frame = experiments.run_eviction(shop)  # the notebook's setting
    assert frame.loc["noeviction", "rejected writes"] > 0 and frame.loc["noeviction", "evicted keys"] == 0
    for policy in ("allkeys-lru", "allkeys-lfu"):
        assert frame.loc[policy, "rejected writes"] == 0 and frame.loc[policy, "evicted keys"] > 0
        assert frame.loc[policy, "hit rate %"] >= frame.loc["noeviction", "hit rate %"] + 10  # the notebook's


def test_eviction_verdicts_fail_when_everything_fits(shop):
    frame = experiments.run_eviction(shop, cache_kb=8192, requests=3000, ids=2000)  # 2,000 users fit in 8 MB
    assert not frame.loc["noeviction", "rejected writes"] > 0
    for policy in ("allkeys-lru", "allkeys-lfu"):
        assert not frame.loc[policy, "hit rate %"] >= frame.loc["noeviction", "hit rate %"] + 10


def test_serve_bounded_without_a_limit_hits_after_the_first_request(r, shop):
    frame = experiments.serve_bounded(r, shop, [1, 2, 1, 1, 2], value_bytes=10)
    assert list(frame["hit"]) == [False, False, True, True, True] and not frame["rejected"].any()
    assert list(frame["queries"]) == [1, 1, 0, 0, 0]
    assert len(json.loads(r.get(key("caching", "evict", 1)))["page"]) == 10


def test_shifting_requests_change_what_is_popular():
    requests = experiments.shifting_requests(1000, 4000, 1.0, seed=2)
    first, second = requests[:2000], requests[2000:]
    top = lambda half: max(set(half), key=half.count)  # noqa: E731
    assert len(requests) == 4000 and top(first) != top(second)


def test_workload_widget_runs_both_ways(r, shop):
    import matplotlib

    matplotlib.use("Agg")
    box = experiments.workload_widget(r, shop)
    ttl, skew, policy, cache_kb, requests, run, out = box.children
    assert policy.value == "no limit" and requests.value == 5000 and out.outputs == ()
    frame, where = experiments._lab_run(r, shop, 60, 1.0, "no limit", 1024, 500)
    assert len(frame) == 500 and "no memory limit" in where and "warm" in where
    frame, where = experiments._lab_run(r, shop, 60, 1.0, "allkeys-lru", 256, 500)
    assert len(frame) == 500 and "allkeys-lru" in where
    requests.value = 500
    run.click()


def lru_verdicts(frame):
    """The notebook's two verdicts on `run_lru_samples`."""
    share = frame["evicted among the oldest %"]
    return share[5] >= share[1] + 20 and share[10] >= share[5] + 5, share[10] >= 65


def test_more_lru_samples_evict_closer_to_true_lru():
    frame = experiments.run_lru_samples()  # the notebook's setting
    assert lru_verdicts(frame) == (True, True)
    assert (frame["old keys evicted"] > 1000).all()
    # Degraded: random eviction ignores idle time, whatever the number of samples.
    assert lru_verdicts(experiments.run_lru_samples(policy="allkeys-random")) == (False, False)


def lfu_verdict(row):
    """The notebook's verdict on a row of `run_lfu_counters`: 10,000 reads rank clearly above 1,000."""
    return row["after 10000 reads"] >= row["after 1000 reads"] + 10


def test_lfu_counters_saturate_with_a_small_log_factor_only():
    frame = experiments.run_lfu_counters()  # the notebook's setting
    assert lfu_verdict(frame.loc[10]) and frame.loc[10, "after 10000 reads"] < 255
    assert frame.loc[0, "after 1000 reads"] == frame.loc[0, "after 10000 reads"] == 255
    assert (frame["after 100 reads"] >= 5).all()  # a new key starts at 5, never below
    # Degraded: a log factor of 0 saturates the counter; the verdict turns False.
    assert not lfu_verdict(experiments.run_lfu_counters(log_factors=(0,)).loc[0])


def refresh_verdicts(frame, callers=8):
    """The notebook's three verdicts on `run_refresh`."""
    lock, early, swr = (frame.loc[variant] for variant in experiments.REFRESH_VARIANTS)
    return (lock["db queries"] == 1 and lock["waited for the database"] >= callers - 1,
            early["waited for the database"] <= early["db queries"]
            and early["waited for the database"] < lock["waited for the database"],
            swr["db queries"] == 1 and swr["waited for the database"] <= 1)


def test_early_refresh_and_stale_while_revalidate_make_fewer_callers_wait_than_the_lock(r, shop):
    frame = experiments.run_refresh(r, shop)  # the notebook's setting
    assert refresh_verdicts(frame) == (True, True, True)
    assert (frame["requests"] > 300).all() and r.exists(key("caching", "lock", "refresh", 5)) == 0
    # Degraded: no early refresh (beta 0) and no stale window: every caller misses at the expiry.
    degraded = experiments.run_refresh(r, shop, ttl=1.0, duration=1.5, beta=0, stale=0,
                                       variants=experiments.REFRESH_VARIANTS[1:])
    lock = frame.loc["per-key lock"]
    assert refresh_verdicts(pd.concat([lock.to_frame().T, degraded])) == (True, False, False)


def test_a_deploy_without_a_new_version_reads_the_old_shape(r):
    with Shop() as shop:  # every user present: the module's shop has lost some to other tests
        frame = experiments.run_deploy(r, shop)  # the notebook's setting
        same = experiments.run_deploy(r, shop, new_version=1)
    assert frame["new release read an old shape"] == 0 and frame["old release read a new shape"] == 0
    assert frame["db queries by the new release"] == 50
    assert frame["old entries left"] == frame["old entries expiring on their own"] == 50
    # Degraded: the version left unchanged: the new release reads every old-shaped entry.
    assert same["new release read an old shape"] == 50 and same["db queries by the new release"] == 0


# --- exercises -----------------------------------------------------------------------------------

def unsolved(*args):
    raise NotImplementedError


@functools.cache
def notebook_r():
    """What a learner's global `r` is: a client the checker does not watch."""
    return connect()


def failed_with(check, solution, phrase):
    """Fails with `phrase` in its hint (or with one of several, where the first property to break depends on timing)."""
    outcome = evaluate(check, notebook_r(), solution)
    phrases = phrase if isinstance(phrase, tuple) else (phrase,)
    assert outcome.status == "failed" and any(p in outcome.hint for p in phrases), outcome.hint


def test_reference_solutions_pass_and_stubs_are_not_solved_yet(r):
    for check, solution in ((checkers.check_negative_caching, solutions.get_cached),
                            (checkers.check_prefix_invalidation, solutions.invalidate_prefix),
                            (checkers.check_stampede_lock, solutions.get_cached_once)):
        assert evaluate(check, r, solution).passed, evaluate(check, r, solution).hint
        assert evaluate(check, r, unsolved).status == "not solved yet"
    assert r.exists(checkers.exercise_prefix(checkers.check_negative_caching) + "user:1") == 0


# Wrong answers to "cache a missing row too", each with the phrase its hint must contain.

def guide_style(client, cache_key, load):  # the guide: `if cached`, and nothing cached for a missing row
    cached = client.get(cache_key)
    if cached:
        return json.loads(cached)
    value = load()
    if value is None:
        return None
    client.set(cache_key, json.dumps(value), ex=3600)
    return value


def same_ttl_for_a_miss(client, cache_key, load):
    cached = client.get(cache_key)
    if cached is not None:
        return json.loads(cached)
    value = load()
    client.set(cache_key, json.dumps(value), ex=300)
    return value


def separate_expire(client, cache_key, load):
    cached = client.get(cache_key)
    if cached is not None:
        return json.loads(cached)
    value = load()
    client.set(cache_key, json.dumps(value))
    client.expire(cache_key, 30 if value is None else 300)  # a crash before this line: cached for ever
    return value


def falsy_is_a_miss(client, cache_key, load):
    cached = client.get(cache_key)
    if cached is not None:
        return json.loads(cached)
    value = load()
    client.set(cache_key, json.dumps(value), ex=300 if value else 30)  # 0, "" and [] get the miss's TTL
    return value


def falsy_hit_reloads(client, cache_key, load):
    cached = client.get(cache_key)
    if cached is not None and (json.loads(cached) or cached == "null"):  # a cached 0 or "" counts as a miss
        return json.loads(cached)
    value = load()
    client.set(cache_key, json.dumps(value), ex=30 if value is None else 300)
    return value


def raw_text_on_a_hit(client, cache_key, load):
    cached = client.get(cache_key)
    if cached is not None:
        return cached
    value = load()
    client.set(cache_key, json.dumps(value), ex=30 if value is None else 300)
    return value


def no_expiry(client, cache_key, load):
    cached = client.get(cache_key)
    if cached is not None:
        return json.loads(cached)
    value = load()
    client.set(cache_key, json.dumps(value))
    return value


def repr_not_json(client, cache_key, load):
    import ast

    cached = client.get(cache_key)
    if cached is not None:
        return ast.literal_eval(cached)
    value = load()
    client.set(cache_key, repr(value), ex=30 if value is None else 300)
    return value


def uses_the_notebook_r(client, cache_key, load):
    return solutions.get_cached(notebook_r(), cache_key, load)


@pytest.mark.parametrize("solution, phrase", [
    (guide_style, "a missing row reached the database 3 times"),
    (same_ttl_for_a_miss, "much shorter time"),
    (separate_expire, "died right after round trip 2 of 3 (SET) and left"),
    (falsy_is_a_miss, "got the short TTL of a missing row"),
    (falsy_hit_reloads, "loaded 2 times in 2 calls"),
    (raw_text_on_a_hit, "decode the JSON"),
    (no_expiry, "has no expiry"),
    (repr_not_json, "as JSON"),
    (uses_the_notebook_r, "not the notebook's `r`"),
])
def test_negative_caching_checker_rejects(solution, phrase):
    failed_with(checkers.check_negative_caching, solution, phrase)


def negative_caching_in_a_transaction(client, cache_key, load):
    """Unusual but right: SET and PEXPIRE in one MULTI/EXEC (one round trip, both or neither), with jitter."""
    cached = client.get(cache_key)
    if cached is not None:
        return json.loads(cached)
    value = load()
    ttl_ms = jittered_ttl(20 if value is None else 600, 0.2)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(cache_key, json.dumps(value)).pexpire(cache_key, ttl_ms).execute()
    return value


def miss_for_exactly_half(client, cache_key, load):
    """Right at the contract's edge: a miss cached for exactly half a row's TTL, with a marker that is not JSON."""
    cached = client.get(cache_key)
    if cached == "<no such row>":
        return None
    if cached is not None:
        return json.loads(cached)
    value = load()
    client.set(cache_key, "<no such row>" if value is None else json.dumps(value), ex=150 if value is None else 300)
    return value


@pytest.mark.parametrize("answer", [negative_caching_in_a_transaction, miss_for_exactly_half])
def test_negative_caching_checker_accepts_an_unusual_right_answer(r, answer):
    assert evaluate(checkers.check_negative_caching, r, answer).passed


# Wrong answers to "invalidate a prefix without KEYS".

def with_keys(client, prefix):
    names = client.keys(prefix + "*")
    return client.delete(*names) if names else 0


def one_giant_scan(client, prefix):
    if not prefix:
        raise ValueError("empty")
    _, names = client.scan(0, match=prefix + "*", count=10_000_000)
    return client.unlink(*names) if names else 0


def one_batch(client, prefix):
    _, names = client.scan(0, match=prefix + "*", count=100)
    return client.delete(*names) if names else 0


def too_broad(client, prefix):
    names = list(client.scan_iter(match=prefix.rstrip(":") + "*", count=500))
    return client.delete(*names)


def one_unlink_per_key(client, prefix):
    if not prefix:
        raise ValueError("empty")
    return sum(client.unlink(name) for name in client.scan_iter(match=prefix + "*", count=500))


def pattern_characters_unescaped(client, prefix):
    if not prefix:
        raise ValueError("empty")
    deleted, cursor = 0, 0
    while True:
        cursor, names = client.scan(cursor, match=prefix + "*", count=500)
        deleted += client.unlink(*names) if names else 0
        if cursor == 0:
            return deleted


def empty_prefix_accepted(client, prefix):
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    deleted, cursor = 0, 0
    while True:
        cursor, names = client.scan(cursor, match=pattern, count=500)
        deleted += client.unlink(*names) if names else 0
        if cursor == 0:
            return deleted


def refuses_every_prefix(client, prefix):
    raise ValueError("no")


def no_return(client, prefix):
    solutions.invalidate_prefix(client, prefix)


def invalidates_with_the_notebook_r(client, prefix):
    return solutions.invalidate_prefix(notebook_r(), prefix)


@pytest.mark.parametrize("solution, phrase", [
    (with_keys, "KEYS was called"),
    (one_giant_scan, "COUNT 10000000"),
    (one_batch, "keep calling SCAN until the cursor is 0"),
    (too_broad, "keys outside the prefix were deleted"),
    (one_unlink_per_key, "one per key"),
    (pattern_characters_unescaped, "pattern characters"),
    (empty_prefix_accepted, "given an empty prefix your function sent a command"),
    (refuses_every_prefix, "raised ValueError for the prefix 'course:caching:exercise:user:42:'"),
    (no_return, "returned None"),
    (invalidates_with_the_notebook_r, "not the notebook's `r`"),
])
def test_prefix_invalidation_checker_rejects(solution, phrase):
    failed_with(checkers.check_prefix_invalidation, solution, phrase)


def filter_in_python(client, prefix):
    """Unusual but right: SCAN without MATCH, the prefix compared in Python (no pattern to escape), DEL per page."""
    if not prefix:
        raise ValueError("an empty prefix names every key")
    deleted, cursor = 0, 0
    while True:
        cursor, names = client.scan(cursor, count=200)
        mine = [name for name in names if name.startswith(prefix)]
        deleted += client.delete(*mine) if mine else 0
        if cursor == 0:
            return deleted


@pytest.mark.parametrize("solution", [filter_in_python, delete_prefix])  # delete_prefix refuses pattern characters
def test_prefix_invalidation_checker_accepts_unusual_right_answers(r, solution):
    assert evaluate(checkers.check_prefix_invalidation, r, solution).passed


# Wrong answers to "one query for many concurrent misses".

def no_lock(client, cache_key, load):
    return solutions.get_cached(client, cache_key, load)


IN_PROCESS = threading.Lock()


def in_process_lock(client, cache_key, load):
    with IN_PROCESS:  # one lock per app server: the other processes load too
        return solutions.get_cached(client, cache_key, load)


def locked(take, release, recheck=True, wait=2.0, store_ttl=300, on_timeout=None):
    """A cache-aside with a lock, built from parts so that each wrong answer changes one part."""

    def get(client, cache_key, load):
        lock_key, token = cache_key + ":lock", secrets.token_hex(8)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            hit = client.get(cache_key)
            if hit is not None:
                return json.loads(hit)
            if take(client, lock_key, token):
                try:
                    hit = client.get(cache_key) if recheck else None
                    if hit is not None:
                        return json.loads(hit)
                    value = load()
                    client.set(cache_key, json.dumps(value), ex=store_ttl)
                    return value
                finally:
                    release(client, lock_key, token)
            if deadline is not None and time.monotonic() > deadline:
                if on_timeout:
                    on_timeout(client, lock_key)
                return load()
            time.sleep(0.005)

    return get


def take_px(client, lock_key, token):
    return client.set(lock_key, token, nx=True, px=10_000)


def take_without_ttl(client, lock_key, token):
    return client.set(lock_key, token, nx=True)


def take_then_expire(client, lock_key, token):
    if client.set(lock_key, token, nx=True):
        client.pexpire(lock_key, 10_000)  # a crash before this line: a lock for ever
        return True
    return False


def release_own(client, lock_key, token):
    release_lock(client, lock_key, token)


def release_with_del(client, lock_key, token):
    client.delete(lock_key)


def release_get_then_del(client, lock_key, token):
    if client.get(lock_key) == token:  # the lock may expire and be taken right here
        client.delete(lock_key)


def never_release(client, lock_key, token):
    pass


def load_anyway_if_locked(client, cache_key, load):
    hit = client.get(cache_key)
    if hit is not None:
        return json.loads(hit)
    token = secrets.token_hex(8)
    taken = client.set(cache_key + ":lock", token, nx=True, px=10_000)
    value = load()  # the callers that did not get the lock load too
    if taken:
        client.set(cache_key, json.dumps(value), ex=300)
        release_lock(client, cache_key + ":lock", token)
    return value


def take_with_a_constant(client, lock_key, token):
    return client.set(lock_key, "locked", nx=True, px=10_000)


def release_if_constant(client, lock_key, token):
    release_lock(client, lock_key, "locked")  # compare-and-delete, but every holder wrote the same value


def take_with_the_pid(client, lock_key, token):
    return client.set(lock_key, str(os.getpid()), nx=True, px=10_000)


def release_if_pid(client, lock_key, token):
    release_lock(client, lock_key, str(os.getpid()))  # the app server's threads all share it


def lock_elsewhere(client, cache_key, load):
    return locked(lambda c, _lock, token: take_px(c, "lock:" + cache_key, token),
                  lambda c, _lock, token: release_lock(c, "lock:" + cache_key, token))(client, cache_key, load)


@pytest.mark.parametrize("solution, phrase", [
    (no_lock, "ran the query 4 times"),
    (in_process_lock, "A lock inside one process holds back that process's threads only"),
    (load_anyway_if_locked, "ran the query 4 times"),
    (locked(take_without_ttl, release_own), "had no expiry"),
    (locked(take_then_expire, release_own), "right after round trip 2 of"),
    (locked(take_px, release_with_del), "deleted that app server's lock"),
    (locked(take_px, release_get_then_del), "right after your GET on the lock"),
    (locked(take_px, never_release), "release the lock"),
    # Without the second look, 4 processes arriving apart (a loaded machine) load twice before the
    # deterministic check that names the mistake runs; both hints are about the same mistake.
    (locked(take_px, release_own, recheck=False), ("look at the cache again", "ran the query 2 times")),
    (locked(take_px, release_own, store_ttl=None), "the cached report has no expiry"),
    (locked(take_px, release_own, wait=None), "Bound every wait"),
    (locked(take_px, release_own, on_timeout=lambda c, lock: c.delete(lock)), "only the lock's owner may release it"),
    (lock_elsewhere, "under a name that starts with the cache key"),
    (locked(take_with_a_constant, release_if_constant), "two calls wrote the same value, 'locked', into the lock"),
    (locked(take_with_the_pid, release_if_pid), "Write a value unique to each acquisition"),
    (lambda client, cache_key, load: solutions.get_cached_once(notebook_r(), cache_key, load),
     "not the notebook's `r`"),
])
def test_stampede_lock_checker_rejects(solution, phrase):
    failed_with(checkers.check_stampede_lock, solution, phrase)


def with_redis_py_lock(client, cache_key, load):
    """Unusual but right: redis-py's own Lock (SET NX PX, a token, a Lua release), bounded by blocking_timeout."""
    hit = client.get(cache_key)
    if hit is not None:
        return json.loads(hit)
    lock = client.lock(cache_key + ":lock", timeout=10, sleep=0.01, blocking_timeout=1.5)
    if not lock.acquire():
        hit = client.get(cache_key)
        return json.loads(hit) if hit is not None else load()  # waited long enough: load on our own
    try:
        hit = client.get(cache_key)
        if hit is not None:
            return json.loads(hit)
        value = load()
        client.set(cache_key, json.dumps(value), ex=300)
        return value
    finally:
        try:
            lock.release()
        except redis.exceptions.LockNotOwnedError:
            pass  # it expired while we loaded, and another app server holds it now: not ours to delete


def test_stampede_lock_checker_accepts_redis_pys_lock(r):
    outcome = evaluate(checkers.check_stampede_lock, r, with_redis_py_lock)
    assert outcome.passed, outcome.hint


def test_module_constants():
    assert caching.CHAPTER == "caching" and caching.INVALIDATION_CHANNEL == "__redis__:invalidate"
