"""Chapter 05: the five limiters, the guide's two, the race, the oracle (`limits`), speed, traffic, exercises."""

import random
import secrets
import threading

import pytest
from redis.exceptions import WatchError

from course_lib.exercises import evaluate
from course_lib.exercises import rate_limiting as checkers
from course_lib.exercises.solutions import rate_limiting as solutions
from course_lib.experiments import rate_limiting as experiments
from course_lib.rate_limiting import (GCRA, STRATEGIES, Decision, FixedWindow, SlidingLog, SlidingWindowCounter,
                                      TokenBucket, address_identity, guide_fixed_window, guide_sliding_window)

T0 = 1_700_000_000.0  # a multiple of every window used here: window boundaries fall on round numbers
ALL = pytest.mark.parametrize("strategy", list(STRATEGIES.values()), ids=list(STRATEGIES))


# -- the common interface -------------------------------------------------------------------------

@ALL
@pytest.mark.parametrize("limit, window", [(0, 10), (-1, 10), (1.5, 10), (True, 10), (3, 0), (3, -1), (3, 0.0004),
                                           (3, "10")])
def test_invalid_parameters_are_refused(r, strategy, limit, window):
    with pytest.raises(ValueError):
        strategy(r, "api", limit, window)


@ALL
@pytest.mark.parametrize("cost", [0, -1, 4, 1.5, True])
def test_invalid_cost_is_refused(r, strategy, cost):
    with pytest.raises(ValueError, match="cost"):
        strategy(r, "api", 3, 10).hit("client", cost, now=T0)


@ALL
def test_identity_and_name_with_spaces_are_refused(r, strategy):
    with pytest.raises(ValueError):
        strategy(r, "my api", 3, 10)
    with pytest.raises(ValueError):
        strategy(r, "api", 3, 10).hit("a client", now=T0)


@ALL
def test_a_burst_gets_exactly_the_limit(r, strategy):
    limiter = strategy(r, "api", 3, 10)
    decisions = [limiter.hit("client", now=T0) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0, 0]
    assert all(d.retry_after == 0 for d in decisions[:3]) and all(d.retry_after > 0 for d in decisions[3:])
    assert limiter.hit("someone-else", now=T0).allowed  # identities are counted apart


@ALL
def test_retry_after_and_reset_after_are_exact_to_the_millisecond(r, strategy):
    """At each denial of a random trace: the same request is still denied 1 ms before retry_after and
    allowed at it; the full quota is not back 1 ms before that hit's reset_after, and is back at it."""
    rng = random.Random(3)
    limit = 4
    limiter = strategy(r, "api", limit, 10)
    now, checked = T0, 0
    for _ in range(500):
        now = round(now + rng.choice((0.0, 0.25, 0.5, 1.5, 4.0)), 3)
        cost = rng.choice((1, 1, 2))
        denied = limiter.hit("client", cost, now=now)
        if denied.allowed:
            continue
        assert not limiter.hit("client", cost, now=now + denied.retry_after - 0.001).allowed
        retried = limiter.hit("client", cost, now=now + denied.retry_after)
        assert retried.allowed, (now, cost, denied)
        full = now + denied.retry_after + retried.reset_after
        assert not limiter.hit("client", limit, now=full - 0.001).allowed
        assert limiter.hit("client", limit, now=full).allowed, (now, cost, retried)
        now, checked = full, checked + 1
        if checked == 10:
            break
    assert checked == 10


@ALL
def test_reset_forgets_an_identity(r, strategy):
    limiter = strategy(r, "api", 2, 10)
    limiter.hit("client", 2, now=T0)
    limiter.hit("other", 2, now=T0)
    assert not limiter.hit("client", now=T0).allowed
    assert limiter.reset("client") >= 1
    assert limiter.hit("client", now=T0).allowed
    assert not limiter.hit("other", now=T0).allowed


@ALL
def test_every_key_has_a_ttl_and_one_hash_tag(r, strategy):
    limiter = strategy(r, "api", 5, 10)
    for i in range(3):
        limiter.hit("client", now=T0 + 6 * i)
    names = list(r.scan_iter(match="course:rate_limiting:*"))
    assert names and all(name.startswith("course:rate_limiting:{api:client}:") for name in names)
    assert all(0 < r.pttl(name) <= 20_000 for name in names)


@ALL
def test_cluster_gives_the_same_decisions(r, rc, strategy):
    """Every key of one identity shares a hash tag, so each script runs on a cluster (no CROSSSLOT)."""
    trace = [(T0 + 0.5 * i, 1 + i % 2) for i in range(40)]
    on_standalone = [strategy(r, "api", 5, 10).hit("client", cost, now=t) for t, cost in trace]
    on_cluster = [strategy(rc, "api", 5, 10).hit("client", cost, now=t) for t, cost in trace]
    assert on_cluster == on_standalone


# -- each strategy's own behaviour ------------------------------------------------------------------

def test_fixed_window_lets_twice_the_limit_through_across_a_boundary(r):
    limiter = FixedWindow(r, "api", 5, 10)
    late = [limiter.hit("client", now=T0 + 9.9).allowed for _ in range(5)]
    early = [limiter.hit("client", now=T0 + 10.0).allowed for _ in range(5)]
    assert late + early == [True] * 10
    assert limiter.hit("client", now=T0 + 19.999) == Decision(False, 0, 0.001, 0.001)


def test_fixed_window_denied_requests_take_nothing(r):
    limiter = FixedWindow(r, "api", 5, 10)
    assert limiter.hit("client", 4, now=T0).allowed
    assert not limiter.hit("client", 3, now=T0).allowed
    assert limiter.hit("client", 1, now=T0) == Decision(True, 0, 0.0, 10.0)


def test_sliding_log_never_exceeds_the_limit_in_any_window(r):
    rng = random.Random(5)
    limiter = SlidingLog(r, "api", 5, 10)
    times = sorted(round(rng.uniform(0, 60), 3) for _ in range(300))
    allowed = [t for t in times if limiter.hit("client", now=T0 + t).allowed]
    assert experiments.max_in_any_window(allowed, 10) == 5
    assert len(allowed) >= 5 * 6


def test_sliding_log_counts_every_unit_when_a_clock_goes_back(r):
    """Members are named "<ms>:<used + n>", free while time moves forward. Here a denied request at
    10.5 s drops the entry of 0 s, then a slow clock asks at 5 s again: the name "<5 s>:2" is taken
    (by the entry of 5 s), so the script names the unit anew and the log holds both, not one."""
    limiter = SlidingLog(r, "api", 2, 10)
    log = limiter.key("client", "log")
    assert [limiter.hit("client", cost, now=T0 + t).allowed for t, cost in ((0, 1), (5, 1), (10.5, 2), (5, 1))] == [
        True, True, False, True]
    assert r.zcard(log) == 2 and r.zrange(log, 0, -1) == [f"{int(T0 * 1000) + 5000}:2", f"{int(T0 * 1000) + 5000}:3"]
    assert not limiter.hit("client", now=T0 + 5).allowed  # the limit holds


def test_sliding_log_forgets_an_entry_exactly_one_window_later(r):
    limiter = SlidingLog(r, "api", 1, 10)
    assert limiter.hit("client", now=T0).allowed
    assert limiter.hit("client", now=T0 + 9.999) == Decision(False, 0, 0.001, 0.001)
    assert limiter.hit("client", now=T0 + 10).allowed


def test_sliding_window_counter_weighs_the_previous_window(r):
    limiter = SlidingWindowCounter(r, "api", 10, 10)
    assert limiter.hit("client", 10, now=T0 + 5).allowed  # previous window: 10
    # 2.5 s into the next window, 75 % of the previous one still counts: floor(7.5) = 7 used.
    # Full again once the 3 taken now have faded too: floor(3 x (10 - e) / 10) = 0 from e = 6.667 s
    # of the window after, i.e. 7.5 + 6.667 s from now.
    assert limiter.hit("client", 3, now=T0 + 12.5) == Decision(True, 0, 0.0, 14.167)
    # room for one more once floor(10 x (10 - e) / 10) <= 6, i.e. from e = 3.001 s: 0.501 s from now
    assert limiter.hit("client", 1, now=T0 + 12.5) == Decision(False, 0, 0.501, 14.167)


def test_token_bucket_refills_at_limit_per_window(r):
    limiter = TokenBucket(r, "api", 4, 8)  # a token every 2 s
    assert all(limiter.hit("client", now=T0).allowed for _ in range(4))
    assert limiter.hit("client", now=T0 + 1) == Decision(False, 0, 1.0, 7.0)
    assert limiter.hit("client", now=T0 + 2) == Decision(True, 0, 0.0, 8.0)
    assert limiter.hit("client", 4, now=T0 + 10) == Decision(True, 0, 0.0, 8.0)
    assert r.hget("course:rate_limiting:{api:client}:bucket", "level") == "0"  # integers, never floats


def test_server_clock_sliding_log_reads_time_and_refuses_a_now(r):
    limiter = SlidingLog(r, "api", 3, 10, server_clock=True)
    assert [limiter.hit("client").allowed for _ in range(4)] == [True, True, True, False]
    (entry, score), = r.zrange(limiter.key("client") + ":log", 0, 0, withscores=True)
    seconds, micros = r.time()
    assert abs(score - (seconds * 1000 + micros // 1000)) < 5_000  # scored by the server's clock
    with pytest.raises(ValueError, match="server's clock"):
        limiter.hit("client", now=T0)


def test_a_fast_app_server_clock_admits_early_and_the_server_clock_does_not(r):
    """The notebook's clock demo: A spends the limit; B, 6.5 s later with a clock 4 s fast, gets a fresh quota."""
    shared = SlidingLog(r, "clocks", 5, 10)
    assert sum(shared.hit("erin", now=T0).allowed for _ in range(5)) == 5
    assert sum(shared.hit("erin", now=T0 + 6.5 + 4).allowed for _ in range(5)) == 5
    server = SlidingLog(r, "clocks-server", 5, 10, server_clock=True)
    assert sum(server.hit("erin").allowed for _ in range(10)) == 5


# -- the guide's limiters ----------------------------------------------------------------------------

class Crash(Exception):
    """Stands for the process dying between two commands."""


def crash() -> None:
    raise Crash


def test_guide_fixed_window_counter_never_expires_after_a_crash(r):
    with pytest.raises(Crash):
        guide_fixed_window(r, "u1", limit=3, window=60, now=T0, between=crash)
    counter = f"course:rate_limiting:guide:fixed:u1:{int(T0 // 60)}"
    assert r.ttl(counter) == -1  # no expiry: it stays forever
    assert [guide_fixed_window(r, "u1", 3, 60, now=T0)["allowed"] for _ in range(3)] == [True, True, False]
    assert r.ttl(counter) == -1  # later requests never repair it (EXPIRE only when the count is 1)


def test_course_fixed_window_always_sets_the_ttl(r):
    FixedWindow(r, "api", 3, 60).hit("u1", now=T0)
    (name,) = r.scan_iter(match="course:rate_limiting:{api:u1}:*")
    assert 0 < r.ttl(name) <= 60


def test_guide_limiters_answer_in_the_guides_shape(r):
    assert guide_fixed_window(r, "u2", limit=1, window=60, now=T0) == {"allowed": True, "remaining": 0}
    assert guide_fixed_window(r, "u2", limit=1, window=60, now=T0) == {"allowed": False, "remaining": 0}
    assert guide_sliding_window(r, "u2", limit=1, window=60, now=T0) == {"allowed": True, "remaining": 0}
    assert guide_sliding_window(r, "u2", limit=1, window=60, now=T0 + 30) == {"allowed": False, "remaining": 0}
    assert guide_sliding_window(r, "u2", limit=1, window=60, now=T0 + 60)["allowed"]


# -- the race -------------------------------------------------------------------------------------

@pytest.mark.parametrize("attempt", range(3))
def test_race_naive_exceeds_the_limit_and_every_course_strategy_holds_it(r, attempt):
    race = experiments.run_race(r).set_index("contender")
    assert race.loc[experiments.GUIDE_SLIDING, "max_admitted"] > 10
    assert race.loc[experiments.GUIDE_SLIDING, "rounds_over_limit"] >= 1
    for strategy in STRATEGIES:
        assert race.loc[strategy, "max_admitted"] == 10
        assert race.loc[strategy, "rounds_over_limit"] == 0
    assert not list(r.scan_iter(match="course:rate_limiting:*"))


def test_race_verdicts_turn_false_in_degraded_settings(r):
    """The notebook's verdicts measure the race: one thread at a time never lets the guide's sliding
    window exceed the limit, and too few requests never let any strategy reach it."""
    alone = experiments.run_race(r, threads=1, per_thread=40, rounds=3).set_index("contender")
    assert not alone.loc[experiments.GUIDE_SLIDING, "max_admitted"] > 10
    few = experiments.run_race(r, threads=2, per_thread=2, rounds=2).set_index("contender")
    assert not all(few.loc[name, "max_admitted"] == 10 for name in STRATEGIES)


def test_oracle_verdict_turns_false_where_the_documented_differences_are_not_avoided(r):
    """With a 10 s window, `limits`' floating-point weight rounds differently: the verdict's
    comparison (same decision on every request) fails, so it really compares decisions."""
    result = experiments.run_oracle(r, window=10)
    assert not (result["same_decisions"] == result["requests"]).all()


# -- the worst case: a greedy client against each strategy ----------------------------------------------

def test_worst_case_sliding_counter_reaches_twice_the_limit_and_the_log_holds_it(r):
    worst = experiments.run_worst_case(r, limit=10, window=10.0).set_index("strategy")["most_in_one_window"]
    assert worst["sliding log"] <= 10  # the notebook's verdicts
    assert worst["sliding window counter"] > 1.5 * 10
    assert worst.to_dict() == {"fixed window": 20, "sliding log": 10, "sliding window counter": 20,
                               "token bucket": 19, "gcra": 19}
    assert not list(r.scan_iter(match="course:rate_limiting:*"))


def test_worst_case_verdicts_turn_false_in_degraded_settings(r):
    """Traffic that does not burst at a window's end leaves the counter at the limit; and the
    "never more than the limit" comparison fails for a strategy without that property."""
    even = experiments.run_worst_case(r, adversarial=False).set_index("strategy")["most_in_one_window"]
    assert not even["sliding window counter"] > 1.5 * 10
    fixed = experiments.run_worst_case(r, strategies=("fixed window",)).set_index("strategy")["most_in_one_window"]
    assert not fixed["fixed window"] <= 10


# -- the oracle: PyPI `limits` ---------------------------------------------------------------------

def test_oracle_agrees_on_every_decision(r):
    result = experiments.run_oracle(r)
    assert list(result["strategy"]) == list(experiments.ORACLE_PAIRS)
    assert (result["same_decisions"] == result["requests"]).all()
    assert ((result["allowed"] > 50) & (result["allowed"] < result["requests"])).all()  # both outcomes occur


def _both(r, strategy, limit, window, trace):
    with experiments.oracle_clock() as clock:
        course = STRATEGIES[strategy](r, "oracle", limit, window)
        ours = experiments.replay(lambda now, cost: course.hit("client", cost, now=now).allowed, trace, T0)
        theirs = experiments.replay(experiments.oracle_limiter(r, strategy, limit, window), trace, T0, clock)
    return ours, theirs


def test_oracle_difference_sliding_log_boundary(r):
    """Documented: at exactly one window of age, the course forgets an entry; `limits` still counts it."""
    ours, theirs = _both(r, "sliding log", 1, 8, [(0, 1), (8, 1)])
    assert ours == [True, True] and theirs == [True, False]


def test_oracle_difference_fixed_window_anchor(r):
    """Documented: `limits` opens a fixed window at its first request; the course aligns windows to the clock."""
    ours, theirs = _both(r, "fixed window", 1, 8, [(4, 1), (8, 1), (11, 1)])
    assert ours == [True, True, False] and theirs == [True, False, False]


def test_oracle_difference_fixed_window_counts_denied_requests(r):
    """Documented: `limits`' fixed window adds a denied request's cost too; the course's takes nothing."""
    ours, theirs = _both(r, "fixed window", 5, 8, [(0, 4), (1, 3), (2, 1)])
    assert ours == [True, False, True] and theirs == [True, False, False]


def test_oracle_clock_is_restored(r):
    import limits.storage.redis
    import time

    with experiments.oracle_clock() as clock:
        clock.now = 5.0
        assert limits.storage.redis.time.time() == 5.0
    assert limits.storage.redis.time is time


def test_oracle_trace_avoids_exact_window_ages():
    for strategy in experiments.ORACLE_PAIRS:
        times = [t for t, _ in experiments.oracle_trace(strategy, 8, 300)]
        assert len(times) == 300 and times == sorted(times)
        if strategy == "fixed window":  # each window's first request falls on the window's start
            firsts = {}
            for t in times:
                firsts.setdefault(t // 8, t)
            assert all(first % 8 == 0 for first in firsts.values())
        else:
            assert not {round(b - a, 6) for a in times for b in times} & {8.0}


# -- speed ----------------------------------------------------------------------------------------

def test_speed_lua_sliding_log_beats_the_guides_four_round_trips(r):
    speed = experiments.run_speed(r, samples=600, rounds=6)
    assert set(speed["contender"]) == {"PING", *STRATEGIES, "guide fixed window", experiments.GUIDE_SLIDING}
    assert experiments.faster_by(speed, "sliding log", experiments.GUIDE_SLIDING, 1.5)  # the notebook's verdict
    # the degraded setting: against a contender making as many round trips, the same verdict is False
    assert not experiments.faster_by(speed, "sliding log", "guide fixed window", 1.5)
    assert not list(r.scan_iter(match="course:rate_limiting:*"))


def test_each_course_strategy_is_as_fast_as_limits_same_strategy(r):
    peers = experiments.run_peers(r, samples=200, rounds=5)
    assert list(peers["strategy"]) == list(experiments.PEERS)
    assert experiments.as_fast_as_peers(peers), peers.to_dict("records")  # the notebook's verdict
    assert not list(r.scan_iter(match="course:rate_limiting:*"))


def test_peer_verdict_turns_false_when_a_course_strategy_makes_two_round_trips(r):
    """The degraded setting: a plausible regression (a PING before each decision) is caught."""
    peers = experiments.run_peers(r, samples=100, rounds=3, extra_round_trip=("sliding window counter",))
    assert peers.set_index("strategy").loc["sliding window counter", "ratio"] > 1.3
    assert not experiments.as_fast_as_peers(peers)


def test_peer_verdict_reads_the_tolerance_plainly():
    table = experiments.pd.DataFrame({"strategy": ["a", "b"], "ratio": [0.97, 1.0 + experiments.PEER_TOLERANCE]})
    assert experiments.as_fast_as_peers(table)
    assert not experiments.as_fast_as_peers(table.assign(ratio=[0.97, 1.01 + experiments.PEER_TOLERANCE]))


# -- GCRA ------------------------------------------------------------------------------------------

def test_gcra_decides_like_the_model_and_the_token_bucket(r):
    result = experiments.run_gcra(r)
    assert (result["same_as_model"] == result["requests"]).all()  # the notebook's verdicts
    assert (result["same_as_token_bucket"] == result["requests"]).all()
    assert ((result["allowed"] > 10) & (result["allowed"] < result["requests"])).all()  # both outcomes occur
    assert not list(r.scan_iter(match="course:rate_limiting:*"))


def test_gcra_verdicts_turn_false_in_degraded_settings(r):
    """A slow app server's clock (time going backwards) parts GCRA from the token bucket, not from
    the model; a model with another limit disagrees: both comparisons really compare."""
    skewed = experiments.run_gcra(r, skew=2.0)
    assert (skewed["same_as_model"] == skewed["requests"]).all()
    assert not (skewed["same_as_token_bucket"] == skewed["requests"]).all()
    other = experiments.run_gcra(r, model_limit=8)
    assert not (other["same_as_model"] == other["requests"]).all()


def test_gcra_after_a_clock_went_back_is_stricter_than_the_token_bucket(r):
    """The documented difference, on a tiny trace (2 per 10 s): one unit at 3 s, then one stamped
    0 s by a slow clock. The bucket keeps its level (no negative refill) and allows; GCRA's TAT is
    now 8 s ahead, plus 5 s for this unit, more than one window: denied."""
    trace = [(3, 1), (0, 1)]
    assert [GCRA(r, "api", 2, 10).hit("client", cost, now=T0 + t).allowed for t, cost in trace] == [True, False]
    assert [TokenBucket(r, "api", 2, 10).hit("client", cost, now=T0 + t).allowed for t, cost in trace] == [True, True]
    decide = experiments.gcra_model(2, 10)
    assert [decide(T0 + t, cost) for t, cost in trace] == [True, False]  # the standard agrees with the script


def test_gcra_stores_one_string_with_exact_parts_of_a_ms(r):
    limiter = GCRA(r, "api", 3, 10)  # one unit every 3333 1/3 ms
    assert limiter.hit("client", now=T0) == Decision(True, 2, 0.0, 3.334)
    tat = "course:rate_limiting:{api:client}:tat"
    assert r.get(tat) == f"{int(T0 * 1000) + 3333}:1" and r.type(tat) == "string"  # 3333 + 1/3 ms
    assert limiter.hit("client", 2, now=T0) == Decision(True, 0, 0.0, 10.0)
    assert r.get(tat) == f"{int(T0 * 1000) + 10000}:0" and 9_000 < r.pttl(tat) <= 10_000
    assert limiter.hit("client", now=T0 + 3.333) == Decision(False, 0, 0.001, 6.667)
    assert limiter.hit("client", now=T0 + 3.334) == Decision(True, 0, 0.0, 10.0)


def test_gcra_is_exact_with_a_huge_limit(r):
    """Durations are kept in 1/limit ms but absolute times in ms, so no number passes 2^53."""
    limiter = GCRA(r, "api", 10**9, 60)
    assert limiter.hit("client", 10**9 - 1, now=T0) == Decision(True, 1, 0.0, 60.0)
    assert limiter.hit("client", 2, now=T0) == Decision(False, 1, 0.001, 60.0)
    assert limiter.hit("client", 2, now=T0 + 0.001).allowed


def test_gcra_model_follows_the_standard():
    decide = experiments.gcra_model(2, 10)  # T = 5 s, tau = 5 s
    assert [decide(t, 1) for t in (0, 0, 0, 4.999, 5)] == [True, True, False, False, True]
    assert experiments.gcra_model(3, 10)(0, 3) and not experiments.gcra_model(3, 10)(0, 4)


# -- per-address identities ------------------------------------------------------------------------

@pytest.mark.parametrize("address, identity", [
    ("203.0.113.7", "ip:203.0.113.7"),
    ("::ffff:203.0.113.7", "ip:203.0.113.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "ip:2001:db8:1:2::/64"),
    ("2001:DB8:1:2::1", "ip:2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
    ("fe80::1%eth0", "ip:fe80::/64"),
    ("::1", "ip:::/64"),
])
def test_address_identity_groups_ipv6_by_64_and_keeps_ipv4_whole(address, identity):
    assert address_identity(address) == identity
    assert " " not in identity


@pytest.mark.parametrize("address", ["", "not an address", "203.0.113.300", "2001:db8::/64", "203.0.113.7 "])
def test_address_identity_refuses_what_is_not_an_address(address):
    with pytest.raises(ValueError):
        address_identity(address)


def test_a_client_rotating_through_its_64_shares_one_quota(r):
    limiter = SlidingLog(r, "api", 3, 10)
    rotating = [limiter.hit(address_identity(f"2001:db8:1:2::{n:x}"), now=T0).allowed for n in range(1, 6)]
    assert rotating == [True, True, True, False, False]
    # the degraded setting: limited per full address, the same client is never stopped
    assert all(limiter.hit(f"ip:2001:db8:9:9::{n:x}", now=T0).allowed for n in range(1, 6))


# -- traffic ---------------------------------------------------------------------------------------

def test_traffic_patterns_are_deterministic_and_validated():
    for pattern in experiments.PATTERNS:
        times = experiments.traffic(pattern, 10, 10, 60)
        assert times == experiments.traffic(pattern, 10, 10, 60) and times == sorted(times)
        assert all(0 <= t < 60 for t in times)
    with pytest.raises(ValueError):
        experiments.traffic("weekly", 10, 10, 60)
    with pytest.raises(ValueError):
        experiments.traffic("steady", 0, 10, 60)


def test_max_in_any_window_counts_half_open_spans():
    assert experiments.max_in_any_window([], 10) == 0
    assert experiments.max_in_any_window([0, 5, 10, 10.001], 10) == 3
    assert experiments.max_in_any_window([0.667, 10.667], 10) == 1


def test_traffic_summary_shows_each_strategys_character(r):
    summary = experiments.traffic_summary(r).set_index(["pattern", "strategy"])
    worst = summary["most_in_one_window"]
    assert (worst.xs("sliding log", level="strategy") <= 10).all()
    assert worst[("burst", "fixed window")] == 20  # the boundary burst: twice the limit
    assert worst[("steady", "token bucket")] > 10  # a full bucket plus its refill
    assert not list(r.scan_iter(match="course:rate_limiting:*"))


def test_traffic_verdicts_turn_false_in_degraded_settings(r):
    """Steady traffic never crosses a boundary in a burst (no 2x for the fixed window), and bursts
    spaced two windows apart never find a bucket with more than its capacity (no more than 10)."""
    steady = experiments.traffic_summary(r, patterns=("steady",), strategies=("fixed window",))
    assert not steady["most_in_one_window"].iloc[0] == 20
    burst = experiments.traffic_summary(r, patterns=("burst",), strategies=("token bucket",))
    assert not burst["most_in_one_window"].iloc[0] > 10


def test_traffic_widget_starts_idle_and_reports_on_run(r):
    widget = experiments.traffic_widget(r)
    status = widget.children[2]
    assert status.value.startswith("Choose traffic")
    widget.children[1].children[1].click()  # Run: burst traffic, fixed window, limit 10
    assert status.value == "60 of 60 allowed; most allowed within one 10 s span: 20 (limit 10)"


# -- exercises ---------------------------------------------------------------------------------------

# Wrong answers to exercise 1, each the mistake the chapter teaches against, with the phrase of its hint.

def guide_incr_then_expire_if_first(client, counter, limit, window):
    count = client.incr(counter)
    if count == 1:
        client.expire(counter, window)
    return count <= limit


def incr_then_separate_expire_nx(client, counter, limit, window):
    count = client.incr(counter)
    client.expire(counter, window, nx=True)
    return count <= limit


def expire_on_every_request(client, counter, limit, window):
    with client.pipeline(transaction=True) as pipe:
        count, _ = pipe.incr(counter).expire(counter, window).execute()
    return count <= limit


def no_expiry(client, counter, limit, window):
    return client.incr(counter) <= limit


FIXED_LOCK = threading.Lock()


def locked_get_then_set(client, counter, limit, window):
    with FIXED_LOCK:  # one lock per process: another app server is not stopped by it
        count = int(client.get(counter) or 0) + 1
        with client.pipeline(transaction=True) as pipe:
            pipe.set(counter, count, keepttl=True).expire(counter, window, nx=True).execute()
    return count <= limit


def checks_then_counts(client, counter, limit, window):
    """Counting and its expiry are atomic, but the decision rests on a count read before: stale by then."""
    if int(client.get(counter) or 0) >= limit:
        return False
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(counter).expire(counter, window, nx=True).execute()
    return True


def watch_retried_for_ever(client, counter, limit, window):
    """A retry that can never succeed: the TTL is set through the client (another connection) on every
    attempt, which changes the watched counter, so EXEC always aborts."""
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(counter)
                count = int(pipe.get(counter) or 0) + 1
                client.expire(counter, window)
                pipe.multi()
                pipe.set(counter, count, keepttl=True)
                pipe.execute()
                return count <= limit
            except WatchError:
                continue


def off_by_one(client, counter, limit, window):
    with client.pipeline(transaction=True) as pipe:
        count, _ = pipe.incr(counter).expire(counter, window, nx=True).execute()
    return count < limit


def notebook_r(client, counter, limit, window):
    return solutions.fixed_window(NOTEBOOK_R[0], counter, limit, window)


def returns_the_count(client, counter, limit, window):
    with client.pipeline(transaction=True) as pipe:
        count, _ = pipe.incr(counter).expire(counter, window, nx=True).execute()
    return count


NOTEBOOK_R = []  # the notebook's global client, set by the fixture below


@pytest.fixture
def notebook_client(r):
    NOTEBOOK_R[:] = [r]
    yield
    NOTEBOOK_R.clear()


@pytest.mark.parametrize("wrong, hint", [
    (guide_incr_then_expire_if_first, "right after round trip 1 of 2 (INCRBY) and left the counter without a TTL"),
    (incr_then_separate_expire_nx, "left the counter without a TTL"),
    (expire_on_every_request, "pushed the window's end back"),
    (no_expiry, "has no TTL"),
    (locked_get_then_set, "a request was lost"),
    (checks_then_counts, "another app server took it right after your command 1 on the counter, and your request "
                         "was allowed too"),
    (off_by_one, "allowed, allowed, allowed, denied, denied"),
    (watch_retried_for_ever, "a loop that never ends"),
    (notebook_r, "not the notebook's `r`"),
    (returns_the_count, "must return True (allowed) or False (denied)"),
], ids=lambda value: getattr(value, "__name__", "hint"))
def test_fixed_window_checker_fails_each_wrong_answer_with_its_hint(r, notebook_client, wrong, hint):
    outcome = evaluate(checkers.check_fixed_window, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


FIXED_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return count <= tonumber(ARGV[1]) and 1 or 0
"""


def fixed_watch_with_retries(client, counter, limit, window):
    """An unusual right answer: WATCH, GET, then SET (keeping the TTL) and EXPIRE NX in MULTI; retry on a conflict."""
    with client.pipeline() as pipe:
        for _attempt in range(10):
            try:
                pipe.watch(counter)
                count = int(pipe.get(counter) or 0) + 1
                pipe.multi()
                pipe.set(counter, count, keepttl=True).expire(counter, window, nx=True)
                pipe.execute()
                return count <= limit
            except WatchError:
                continue
    raise RuntimeError("the counter kept changing")


@pytest.mark.parametrize("right", [
    solutions.fixed_window,
    lambda client, counter, limit, window: client.eval(FIXED_SCRIPT, 1, counter, limit, window),  # a Lua script
    fixed_watch_with_retries,
], ids=["reference: MULTI with EXPIRE NX", "Lua: INCR, EXPIRE when there is no TTL, 1/0", "WATCH with retries"])
def test_fixed_window_checker_passes_correct_answers(r, right):
    assert evaluate(checkers.check_fixed_window, r, right).passed


# Wrong answers to exercise 2.

LOG_LOCK = threading.Lock()


def four_calls(client, log, limit, window_ms, now_ms):
    client.zremrangebyscore(log, "-inf", now_ms - window_ms)
    if client.zcard(log) >= limit:
        return False
    client.zadd(log, {f"{now_ms}-{random.random()}": now_ms})
    client.pexpire(log, window_ms)
    return True


def locked_four_calls(client, log, limit, window_ms, now_ms):
    with LOG_LOCK:  # the wrong answer: one lock per process around the four calls
        return four_calls(client, log, limit, window_ms, now_ms)


def _script(source, keys):
    return lambda client, log, limit, window_ms, now_ms: client.eval(
        source, len(keys), *(log + suffix for suffix in keys), limit, window_ms, now_ms)


REMOVE_COUNT_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], redis.call('INCR', KEYS[2]))
"""
NO_EXPIRY = REMOVE_COUNT_ADD + "return 1"
SAME_MEMBER = REMOVE_COUNT_ADD.replace("redis.call('INCR', KEYS[2])", "ARGV[3]") + (
    "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1")
KEEPS_THE_OLDEST = REMOVE_COUNT_ADD.replace("'-inf', ARGV[3] - ARGV[2]", "'-inf', '(' .. (ARGV[3] - ARGV[2])") + (
    "redis.call('PEXPIRE', KEYS[1], ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[2]) return 1")
SEQ_NEVER_EXPIRES = REMOVE_COUNT_ADD + "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1"


def script_then_separate_expiry(client, log, limit, window_ms, now_ms):
    allowed = client.eval(NO_EXPIRY, 2, log, log + ":seq", limit, window_ms, now_ms)
    client.pexpire(log, window_ms)
    client.pexpire(log + ":seq", window_ms)
    return allowed


def add_then_remove_if_over(client, log, limit, window_ms, now_ms):
    """A popular variant: record first, count, and take the request back in a second round trip if it was too many."""
    member = f"{now_ms}:{secrets.token_hex(8)}"
    with client.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(log, "-inf", now_ms - window_ms).zadd(log, {member: now_ms}).zcard(log)
        _, _, count = pipe.pexpire(log, window_ms).execute()[:3]
    if count > limit:
        client.zrem(log, member)
        return False
    return True


NEVER_TRIMMED = """
local now, window = tonumber(ARGV[3]), tonumber(ARGV[2])
if redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf') >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


def counts_the_window_but_never_trims(client, log, limit, window_ms, now_ms):
    return client.eval(NEVER_TRIMMED, 1, log, limit, window_ms, now_ms, secrets.token_hex(8)) == 1


SHARED_SEQUENCE = NEVER_TRIMMED.replace("redis.call('ZADD'", "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window) redis.call('ZADD'")


def one_sequence_for_everyone(client, log, limit, window_ms, now_ms):
    """Unique members from a counter of a fixed name, shared by every log and never expiring."""
    member = client.incr("course:rate_limiting:exercise-seq")  # left behind: the next test's fixture deletes it
    return client.eval(SHARED_SEQUENCE, 1, log, limit, window_ms, now_ms, member) == 1


def counts_at_limit_zero(client, log, limit, window_ms, now_ms):
    return solutions.sliding_log(client, log, max(limit, 1), window_ms, now_ms)


@pytest.mark.parametrize("wrong, hint", [
    (four_calls, "another app server filled the window"),
    (locked_four_calls, "a lock inside your process cannot stop another app server"),
    (_script(NO_EXPIRY, ["", ":seq"]), "should all expire"),
    (_script(SEQ_NEVER_EXPIRES, ["", ":seq"]), "should all expire"),
    (script_then_separate_expiry, "right after round trip 1 of 3 (EVAL) and left"),
    (_script(SAME_MEMBER, [""]), "make each entry's member unique"),
    (_script(KEEPS_THE_OLDEST, ["", ":seq"]), "leaves the window once now - its time >= window"),
    (counts_at_limit_zero, "limit of 0 denies every request"),
    (lambda client, log, limit, window_ms, now_ms: None, "returned None"),
    (add_then_remove_if_over, "left 5 requests in a window of 4: a request that is denied must never be recorded"),
    (counts_the_window_but_never_trims, "still holds 3 requests that left the window"),
    (one_sequence_for_everyone, "named ['course:rate_limiting:exercise-seq'], keys that are not the log's"),
], ids=["four calls", "threading.Lock around four calls", "no PEXPIRE", "helper key never expires",
        "PEXPIRE in a second round trip", "colliding members", "off by one at the window's edge", "limit 0",
        "no return", "add, then remove if over", "never trimmed", "a key of a fixed name"])
def test_sliding_log_checker_fails_each_wrong_answer_with_its_hint(r, wrong, hint):
    outcome = evaluate(checkers.check_sliding_log, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


ZCOUNT_RANDOM_MEMBERS = """
local now, window = tonumber(ARGV[3]), tonumber(ARGV[2])
if redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf') >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


def zcount_with_random_members(client, log, limit, window_ms, now_ms):
    """An unusual right answer: no helper key, a random member sent from Python, ZCOUNT instead of ZCARD."""
    return client.eval(ZCOUNT_RANDOM_MEMBERS, 1, log, limit, window_ms, now_ms, secrets.token_hex(8)) == 1


def watch_with_bounded_retries(client, log, limit, window_ms, now_ms):
    """An unusual right answer: optimistic locking. A conflict retries (a few times), then denies."""
    with client.pipeline() as pipe:
        for _attempt in range(5):
            try:
                pipe.watch(log)
                pipe.zremrangebyscore(log, "-inf", now_ms - window_ms)  # runs at once: not in MULTI yet
                if pipe.zcard(log) >= limit:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.zadd(log, {f"{now_ms}:{secrets.token_hex(8)}": now_ms})
                pipe.pexpire(log, window_ms)
                pipe.execute()
                return True
            except WatchError:
                continue
    return False


@pytest.mark.parametrize("right", [solutions.sliding_log, zcount_with_random_members, watch_with_bounded_retries],
                         ids=["reference: one Lua script", "Lua: ZCOUNT, random members, no helper key",
                              "WATCH/MULTI with bounded retries"])
def test_sliding_log_checker_passes_correct_answers(r, right):
    assert evaluate(checkers.check_sliding_log, r, right).passed


def test_unsolved_exercises_say_so(r):
    def stub(*args):
        raise NotImplementedError

    for checker in (checkers.check_fixed_window, checkers.check_sliding_log):
        assert evaluate(checker, r, stub).status == "not solved yet"
