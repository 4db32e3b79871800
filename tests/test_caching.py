"""Chapter 02: caching patterns, experiments and exercise checkers, against real servers and a real SQLite database."""

import json
import random
import threading

import pytest
import redis

from course_lib import caching
from course_lib.caching import (TrackingCache, cache_aside, cache_aside_locked, jittered_ttl, release_lock, store,
                                update_then_invalidate, write_through)
from course_lib.concurrency import run_together
from course_lib.exercises import ExerciseFailed, evaluate
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


def test_the_guides_cache_aside_without_negative_caching_hits_the_database_every_time(r, shop):
    """The failure the chapter shows live: `if cached` + no SET for a missing row."""

    def guide_get_user(user_id):
        cached = r.get(key("caching", "guide", user_id))
        if cached:
            return json.loads(cached)
        user = shop.user(user_id)
        if user is None:
            return None
        r.set(key("caching", "guide", user_id), json.dumps(user), ex=3600)
        return user

    queries = shop.queries
    for _ in range(5):
        guide_get_user(USERS + 1)
    assert shop.queries - queries == 5


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
        return [c for c in r.client_list(_type="pubsub") if c["name"].startswith("course-invalidations-")]

    local = TrackingCache(r)
    assert len(listeners()) == 1
    local.close()
    assert listeners() == []


def test_redis_py_builtin_cache_refuses_servers_older_than_7_4(r):
    from course_lib.connection import server_identity

    engine, version, _ = server_identity(r)
    if engine == "Redis" and tuple(map(int, version.split(".")[:2])) >= (7, 4):
        pytest.skip("this server accepts redis-py's built-in cache")
    from redis.cache import CacheConfig

    kwargs = {k: r.connection_pool.connection_kwargs[k] for k in ("host", "port")}
    with pytest.raises(redis.ConnectionError, match="7.4"):
        redis.Redis(protocol=3, cache_config=CacheConfig(), **kwargs).ping()


# --- experiments ---------------------------------------------------------------------------------

def test_hit_vs_query(r, shop):
    frame = experiments.run_hit_vs_query(r, shop, query_samples=3, hit_samples=300)
    assert list(frame.index) == ["SQLite query", "cache-aside hit (GET + JSON)", "client-side hit (local memory)"]
    assert frame.loc["SQLite query", "median_ms"] > 10 * frame.loc["cache-aside hit (GET + JSON)", "median_ms"]
    assert r.exists(key("caching", "hitlab", 42)) == 0


def test_zipf_requests_are_deterministic_and_skewed():
    a = experiments.zipf_requests(1000, 5000, 1.0, seed=3)
    assert a == experiments.zipf_requests(1000, 5000, 1.0, seed=3) != experiments.zipf_requests(1000, 5000, 1.0, seed=4)
    assert set(a) <= set(range(1, 1001))
    top = max(a.count(n) for n in set(a))
    uniform = experiments.zipf_requests(1000, 5000, 0.0, seed=3)
    assert top > 5 * max(uniform.count(n) for n in set(uniform))


def test_workload_misses_are_exactly_the_distinct_ids(r, shop):
    frame = experiments.run_workload(r, shop, requests=2000, ids=1000, skew=1.0, seed=5)
    distinct = len(set(experiments.zipf_requests(1000, 2000, 1.0, 5)))
    summary = experiments.summarize(frame).iloc[0]
    assert summary["db queries with cache"] == distinct and summary["requests"] == 2000
    assert summary["hit rate %"] == round(100 * (2000 - distinct) / 2000, 1)
    assert r.exists(key("caching", "lab", 1)) == 0
    assert experiments.summarize(experiments.run_workload(r, shop, requests=2000, ids=1000, skew=1.0, seed=5)).equals(
        experiments.summarize(frame))


def test_stampede_experiment(r, shop):
    frame = experiments.run_stampede(r, shop, concurrency=6)
    assert frame.loc["with per-key lock", "db queries"] == 1
    assert frame.loc["plain cache-aside", "db queries"] > 1


def test_keys_blocks_other_clients_longer_than_scan():
    frame = experiments.run_keys_vs_scan(keys=300_000, repeat_for=0.4)
    assert list(frame["found"]) == [10, 10] and list(frame["keyspace"]) == [300_010, 300_010]
    assert frame.loc["KEYS", "ping_p99_ms"] > 3 * frame.loc["SCAN (COUNT 1000)", "ping_p99_ms"]


def test_eviction_policies(shop):
    frame = experiments.run_eviction(shop, cache_kb=512, requests=3000, ids=2000)
    assert frame.loc["noeviction", "rejected writes"] > 0 and frame.loc["noeviction", "evicted keys"] == 0
    for policy in ("allkeys-lru", "allkeys-lfu"):
        assert frame.loc[policy, "rejected writes"] == 0 and frame.loc[policy, "evicted keys"] > 0
        assert frame.loc[policy, "hit rate %"] > frame.loc["noeviction", "hit rate %"]


def test_serve_bounded_without_a_limit_hits_after_the_first_request(r, shop):
    frame = experiments.serve_bounded(r, shop, [1, 2, 1, 1, 2], value_bytes=10)
    assert list(frame["hit"]) == [False, False, True, True, True] and not frame["rejected"].any()
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
    assert len(frame) == 500 and "no memory limit" in where
    frame, where = experiments._lab_run(r, shop, 60, 1.0, "allkeys-lru", 256, 500)
    assert len(frame) == 500 and "allkeys-lru" in where
    requests.value = 500
    run.click()


# --- exercises -----------------------------------------------------------------------------------

def unsolved(*args):
    raise NotImplementedError


def test_negative_caching_checker(r):
    check = checkers.check_negative_caching
    assert evaluate(check, r, solutions.get_cached).passed
    assert evaluate(check, r, unsolved).status == "not solved yet"

    def guide_style(client, cache_key, load):
        cached = client.get(cache_key)
        if cached:
            return json.loads(cached)
        value = load()
        if value is None:
            return None
        client.set(cache_key, json.dumps(value), ex=3600)
        return value

    def no_expiry(client, cache_key, load):
        cached = client.get(cache_key)
        if cached is not None:
            return json.loads(cached)
        value = load()
        client.set(cache_key, json.dumps(value))
        return value

    outcome = evaluate(check, r, guide_style)
    assert outcome.status == "failed" and "missing row" in outcome.hint
    assert "expiry" in evaluate(check, r, no_expiry).hint
    assert r.exists(checkers.exercise_prefix(check) + "user:1") == 0


def test_prefix_invalidation_checker(r):
    check = checkers.check_prefix_invalidation
    assert evaluate(check, r, solutions.invalidate_prefix).passed

    def with_keys(client, prefix):
        names = client.keys(prefix + "*")
        return client.delete(*names) if names else 0

    def one_batch(client, prefix):
        _, names = client.scan(0, match=prefix + "*", count=100)
        return client.delete(*names) if names else 0

    def too_broad(client, prefix):
        names = list(client.scan_iter(match=prefix.rstrip(":") + "*", count=500))
        return client.delete(*names)

    assert "KEYS" in evaluate(check, r, with_keys).hint
    assert "survived" in evaluate(check, r, one_batch).hint
    assert "outside the prefix" in evaluate(check, r, too_broad).hint


def test_stampede_lock_checker(r):
    check = checkers.check_stampede_lock
    assert evaluate(check, r, solutions.get_cached_once).passed
    assert evaluate(check, r, unsolved).status == "not solved yet"

    def plain(client, cache_key, load):
        return solutions.get_cached(client, cache_key, load)

    def lock_never_released(client, cache_key, load):
        while True:
            hit = client.get(cache_key)
            if hit is not None:
                return json.loads(hit)
            if client.set(cache_key + ":lock", "1", nx=True):
                value = load()
                client.set(cache_key, json.dumps(value), ex=300)
                return value

    assert "ran the query" in evaluate(check, r, plain).hint
    assert "release the lock" in evaluate(check, r, lock_never_released).hint


def test_stampede_lock_checker_reports_callers_that_never_return(r):
    release = threading.Event()

    def waits_for_ever(client, cache_key, load):
        release.wait(timeout=60)  # stuck until the test lets it go

    try:
        with pytest.raises(ExerciseFailed, match=r"had not returned after 1 s: bound every wait"):
            checkers.check_stampede_lock(r, waits_for_ever, timeout=1)
    finally:
        release.set()


def test_module_constants():
    assert caching.CHAPTER == "caching" and caching.INVALIDATION_CHANNEL == "__redis__:invalidate"
