"""Chapter 01: the data-type patterns, its experiments and widgets, and its exercise checkers, on real servers."""

import threading
import time

import ipywidgets as widgets
import pandas as pd
import pytest
from redis.exceptions import WatchError

from course_lib import data_types as dt
from course_lib.concurrency import run_together
from course_lib.connection import connect
from course_lib.exercises import evaluate
from course_lib.exercises import data_types as ex
from course_lib.exercises.solutions import data_types as solutions
from course_lib.experiments import data_types as exp
from course_lib.keys import hash_tag, key
from course_lib.servers import scratch_server


def k(*parts):
    return key("data_types", "test", *parts)


# -- counters ------------------------------------------------------------------------------------

def test_increment_counts_from_zero_and_by_steps(r):
    assert dt.increment(r, k("views")) == 1
    assert dt.increment(r, k("views"), by=10) == 11
    assert r.get(k("views")) == "11"


def test_increment_unsafely_is_right_when_alone(r):
    assert dt.increment_unsafely(r, k("views")) == 1
    assert dt.increment_unsafely(r, k("views"), by=4) == 5


def test_counter_race_loses_updates_with_get_set_and_none_with_incr(r):
    table = exp.run_counter_race(r, threads=4, increments=200).set_index("method")
    assert list(table["expected"]) == [800, 800]
    assert table.loc["INCR", "lost"] == 0
    assert table.loc["GET + SET", "lost"] > 0
    assert r.get(key("data_types", "race", "incr")) == "800"


def test_counter_race_verdict_fails_without_concurrency(r):
    """The degraded setting: one thread cannot race itself, so "GET+SET lost updates" must say False."""
    table = exp.run_counter_race(r, threads=1, increments=200).set_index("method")
    assert not table.loc["GET + SET", "lost"] > 0


def test_counter_race_reraises_a_thread_error(r):
    with pytest.raises(ValueError):
        exp._hammer(r, k("bad"), lambda client, name: int("not a number"), threads=2, increments=1)


# -- hashes --------------------------------------------------------------------------------------

def test_save_profile_updates_one_field_and_keeps_the_rest(r):
    assert dt.save_profile(r, k("user", 1), {"name": "Alice", "email": "a@example.com", "role": "admin"}) == 3
    assert dt.save_profile(r, k("user", 1), {"role": "superadmin"}) == 0
    assert dt.load_profile(r, k("user", 1)) == {"name": "Alice", "email": "a@example.com", "role": "superadmin"}
    assert dt.load_profile(r, k("user", 2)) == {}


def test_save_profile_needs_a_field(r):
    with pytest.raises(ValueError, match="at least one field"):
        dt.save_profile(r, k("user", 1), {})


def test_one_hash_uses_less_memory_than_many_string_keys(r):
    table = exp.run_hash_vs_strings(r, fields=100).set_index("layout")
    assert table.loc["one hash", "memory_bytes"] < table.loc["100 string keys", "memory_bytes"]
    assert list(table["keys"]) == [1, 100]
    assert r.hlen(key("data_types", "memory", "user")) == 100


def test_hash_memory_verdict_fails_for_a_single_field(r):
    """The degraded setting: one field saves no per-key overhead, so "one hash uses less" must say False."""
    table = exp.run_hash_vs_strings(r, fields=1).set_index("layout")
    assert not table.loc["one hash", "memory_bytes"] < table.loc["1 string keys", "memory_bytes"]


# -- lists ---------------------------------------------------------------------------------------

def test_log_activity_keeps_the_newest_entries_first(r):
    for i in range(7):
        dt.log_activity(r, k("log"), f"e{i}", keep=3)
        assert r.llen(k("log")) == min(i + 1, 3)
    assert dt.recent_activity(r, k("log")) == ["e6", "e5", "e4"]
    assert dt.recent_activity(r, k("log"), count=2) == ["e6", "e5"]


def test_log_activity_rejects_a_cap_below_one(r):
    with pytest.raises(ValueError, match="at least 1"):
        dt.log_activity(r, k("log"), "e", keep=0)


def test_reliable_queue_is_fifo_and_parks_claimed_jobs(r):
    queue, processing = k("jobs"), k("jobs", "processing")
    r.lpush(queue, "job1", "job2", "job3")
    assert dt.claim_job(r, queue, processing, timeout=1) == "job1"
    assert r.lrange(processing, 0, -1) == ["job1"]
    assert dt.ack_job(r, processing, "job1") is True
    assert dt.ack_job(r, processing, "job1") is False
    assert r.llen(processing) == 0


def test_claim_job_waits_a_bounded_time_on_an_empty_queue(r):
    started = time.monotonic()
    assert dt.claim_job(r, k("jobs"), k("jobs", "processing"), timeout=0.2) is None
    assert 0.1 < time.monotonic() - started < 5


def test_claim_job_wakes_up_when_a_job_arrives(r):
    pusher = threading.Timer(0.1, lambda: r.lpush(k("jobs"), "late"))
    pusher.start()
    try:
        assert dt.claim_job(r, k("jobs"), k("jobs", "processing"), timeout=5) == "late"
    finally:
        pusher.join(timeout=5)


def test_claim_job_refuses_to_block_forever(r):
    with pytest.raises(ValueError, match="block forever"):
        dt.claim_job(r, k("jobs"), k("jobs", "processing"), timeout=0)


def test_requeue_unacked_puts_a_dead_workers_jobs_back_first_in_line(r):
    queue, processing = k("jobs"), k("jobs", "processing")
    r.lpush(queue, "job1", "job2", "job3")
    dt.claim_job(r, queue, processing, timeout=1)
    dt.claim_job(r, queue, processing, timeout=1)  # the worker dies holding job1 and job2
    assert dt.requeue_unacked(r, processing, queue) == 2
    assert r.llen(processing) == 0
    assert [dt.claim_job(r, queue, processing, timeout=1) for _ in range(3)] == ["job1", "job2", "job3"]


def test_reliable_queue_works_on_a_cluster_with_a_hash_tag(rc):
    queue = key("data_types", hash_tag("jobs"), "pending")
    processing = key("data_types", hash_tag("jobs"), "processing")
    rc.lpush(queue, "a", "b")
    assert dt.claim_job(rc, queue, processing, timeout=1) == "a"
    assert dt.requeue_unacked(rc, processing, queue) == 1
    assert dt.claim_job(rc, queue, processing, timeout=1) == "a"
    assert dt.ack_job(rc, processing, "a") is True


# -- sets ----------------------------------------------------------------------------------------

def test_tag_index_both_ways(r):
    index = k("blog")
    assert dt.tag_post(r, index, "42", "typescript", "nodejs", "redis") == 3
    assert dt.tag_post(r, index, "42", "typescript") == 0  # duplicate ignored
    dt.tag_post(r, index, "43", "python", "redis", "nodejs")
    assert dt.shared_tags(r, index, "42", "43") == ["nodejs", "redis"]
    assert dt.posts_tagged(r, index, "redis") == ["42", "43"]
    assert dt.posts_tagged(r, index, "redis", "python") == ["43"]
    assert dt.posts_tagged(r, index, "go") == []


def test_tag_post_needs_a_tag(r):
    with pytest.raises(ValueError, match="at least one tag"):
        dt.tag_post(r, k("blog"), "42")


def test_tag_index_works_on_a_cluster_with_a_hash_tag(rc):
    index = key("data_types", hash_tag("blog"))
    dt.tag_post(rc, index, "1", "a", "b")
    dt.tag_post(rc, index, "2", "b", "c")
    assert dt.shared_tags(rc, index, "1", "2") == ["b"]
    assert dt.posts_tagged(rc, index, "b") == ["1", "2"]


# -- sorted sets ---------------------------------------------------------------------------------

@pytest.fixture
def board(r):
    name = k("board")
    r.zadd(name, {"alice": 2350, "bob": 1800, "charlie": 2100, "dave": 2100, "erin": 900})
    return name


def test_top_is_best_first_with_ties_in_reverse_name_order(r, board):
    assert dt.top(r, board, 3) == [("alice", 2350.0), ("dave", 2100.0), ("charlie", 2100.0)]
    assert len(dt.top(r, board, 10)) == 5


def test_add_points_and_place(r, board):
    assert dt.add_points(r, board, "bob", 50) == 1850.0
    assert dt.add_points(r, board, "newbie", 5) == 5.0
    assert dt.place(r, board, "alice") == 1
    assert dt.place(r, board, "newbie") == 6
    assert dt.place(r, board, "nobody") is None


def test_around_shows_neighbours_and_clips_at_the_top(r, board):
    assert dt.around(r, board, "charlie", radius=1) == [(2, "dave", 2100.0), (3, "charlie", 2100.0), (4, "bob", 1800.0)]
    assert dt.around(r, board, "alice", radius=2) == [(1, "alice", 2350.0), (2, "dave", 2100.0), (3, "charlie", 2100.0)]
    assert dt.around(r, board, "nobody") == []


def test_store_top_copies_the_best_entries_with_their_scores(r, board):
    assert dt.store_top(r, board, k("top2"), 2) == 2
    assert r.zrange(k("top2"), 0, -1, desc=True, withscores=True) == [["alice", 2350.0], ["dave", 2100.0]]
    assert dt.store_top(r, board, k("top2"), 0) == 0 and not r.exists(k("top2"))  # n = 0: nothing, not everything


def test_combine_boards_adds_weighted_scores(r):
    r.zadd(k("mon"), {"alice": 10, "bob": 5})
    r.zadd(k("tue"), {"alice": 1, "carol": 7})
    assert dt.combine_boards(r, k("week"), {k("mon"): 1, k("tue"): 2}) == 3
    assert r.zrange(k("week"), 0, -1, withscores=True) == [["bob", 5.0], ["alice", 12.0], ["carol", 14.0]]
    assert dt.combine_boards(r, k("best"), {k("mon"): 1, k("tue"): 1}, aggregate="MAX") == 3
    assert r.zscore(k("best"), "alice") == 10.0
    with pytest.raises(ValueError, match="at least one board"):
        dt.combine_boards(r, k("week"), {})


# -- any key: expiry, types, scanning ------------------------------------------------------------

def test_seconds_to_live_tells_no_expiry_from_missing(r):
    r.set(k("forever"), "v")
    r.set(k("brief"), "v", ex=100)
    assert dt.seconds_to_live(r, k("forever")) is None
    assert 99 < dt.seconds_to_live(r, k("brief")) <= 100
    with pytest.raises(KeyError):
        dt.seconds_to_live(r, k("missing"))
    r.persist(k("brief"))
    assert dt.seconds_to_live(r, k("brief")) is None


def test_scan_collection_walks_every_type_in_batches(r):
    r.hset(k("big"), mapping={f"f{i}": i for i in range(600)})  # a hashtable: several calls
    r.sadd(k("set"), "a", "b", "c")
    r.zadd(k("z"), {"x": 1, "y": 2})
    assert dict(dt.scan_collection(r, k("big"), count=50)) == {f"f{i}": str(i) for i in range(600)}
    assert set(dt.scan_collection(r, k("big"), match="f59?")) == {(f"f59{i}", f"59{i}") for i in range(10)}
    assert sorted(dt.scan_collection(r, k("set"))) == ["a", "b", "c"]
    assert sorted(dt.scan_collection(r, k("z"))) == [("x", 1.0), ("y", 2.0)]
    r.rpush(k("list"), "a")
    for name in (k("list"), k("missing")):
        with pytest.raises(TypeError, match="not a hash, set or sorted set"):
            dt.scan_collection(r, name)


def test_draw_winners_never_gives_a_member_twice_across_threads(r):
    r.sadd(k("entrants"), *range(20))
    drawn = []
    run_together(lambda slot: drawn.extend(dt.draw_winners(r, k("entrants"), 5)), 4, timeout=30, what="draws")
    assert sorted(drawn, key=int) == [str(i) for i in range(20)] and not r.exists(k("entrants"))
    assert dt.draw_winners(r, k("entrants"), 3) == [] and dt.draw_winners(r, k("other"), 0) == []


def test_sample_members_keeps_the_set_and_repeats_only_when_asked(r):
    r.sadd(k("few"), "a", "b", "c")
    assert sorted(dt.sample_members(r, k("few"), 10)) == ["a", "b", "c"]
    assert len(dt.sample_members(r, k("few"), 10, repeats=True)) == 10
    assert r.scard(k("few")) == 3 and dt.sample_members(r, k("few"), 0) == []


def test_lazy_and_active_expiry_on_a_scratch_server():
    with scratch_server() as server, server.client() as client:
        table = exp.run_lazy_and_active_expiry(client, keys=50)
        assert list(table["dbsize"]) == [50, 50, 49, 0]
        assert all(exp.expiry_verdicts(table).values())
        assert client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 1) == "OK"


def test_expiry_verdict_fails_with_the_active_cycle_on():
    """The degraded setting: with the active cycle running, unread expired keys are gone within the hold."""
    with scratch_server() as server, server.client() as client:
        verdicts = exp.expiry_verdicts(exp.run_lazy_and_active_expiry(client, keys=50, active_cycle=True))
    still_counted, lazy, active = verdicts.values()
    assert not still_counted and not lazy and active


def test_del_blocks_another_client_and_unlink_does_not():
    with scratch_server(config={"lazyfree-lazy-user-del": "no"}) as server, server.client() as client:
        table = exp.run_delete_latency(client)
        assert client.dbsize() == 0
    claim, holds = exp.delete_latency_verdict(table)
    assert holds, table
    assert list(table["command"]) == ["DEL", "UNLINK"] and (table["pings_during"] >= 1).all()


def test_delete_latency_verdict_fails_when_del_is_lazy_too():
    """The degraded setting: lazyfree-lazy-user-del yes (Valkey >= 8's default) makes DEL free in the background."""
    with scratch_server(config={"lazyfree-lazy-user-del": "yes"}) as server, server.client() as client:
        table = exp.run_delete_latency(client)
    assert not exp.delete_latency_verdict(table)[1], table


# -- bitmaps, HyperLogLog, geo -------------------------------------------------------------------

def test_daily_active_users_with_bitmaps(r):
    days = [k("{dau}", "day", d) for d in (1, 2, 3)]
    for day, users in zip(days, ([1, 2, 3, 5], [2, 3, 8], [3, 5, 8])):
        for user in users:
            assert dt.mark_active(r, day, user) is False
    assert dt.mark_active(r, days[0], 1) is True  # already there
    assert [dt.count_active(r, day) for day in days] == [4, 3, 3]
    assert dt.combine_days(r, k("{dau}", "all"), "AND", *days) == 1  # user 3
    assert dt.combine_days(r, k("{dau}", "any"), "OR", *days) == 5
    assert dt.combine_days(r, k("{dau}", "all"), "AND", days[0], k("{dau}", "missing")) == 0
    with pytest.raises(ValueError):
        dt.combine_days(r, k("{dau}", "x"), "XOR", *days)
    with pytest.raises(ValueError):
        dt.mark_active(r, days[0], -1)


def test_bitmap_is_smaller_than_a_set_for_dense_ids(r):
    table = exp.run_bitmap_vs_set(r)
    assert list(table["active"]) == [33_334, 33_334]
    assert exp.bitmap_verdict(table)[1]


def test_bitmap_verdict_fails_for_large_ids(r):
    """The degraded setting: ids from 10,000,000 up make the bitmap 1.25 MB before the first user."""
    assert not exp.bitmap_verdict(exp.run_bitmap_vs_set(r, first_id=10_000_000))[1]


def test_unique_visitors_counts_the_union(r):
    days = [k("{hll}", d) for d in (1, 2)]
    assert dt.count_visit(r, days[0], "ann", "bob") is True
    assert dt.count_visit(r, days[0], "ann") is False  # already counted: the estimate did not change
    dt.count_visit(r, days[1], "bob", "cid")
    assert dt.unique_visitors(r, days[0]) == 2 and dt.unique_visitors(r, *days) == 3
    with pytest.raises(ValueError):
        dt.unique_visitors(r)


def test_hyperloglog_verdicts_hold_on_a_week_of_visits(r):
    table = exp.run_unique_visitors(r)
    assert all(exp.unique_visitor_verdicts(table).values()), table


def test_hyperloglog_error_verdict_fails_when_days_are_summed(r):
    """The degraded setting: adding the days' counts counts every returning visitor again."""
    error, smaller = exp.unique_visitor_verdicts(exp.run_unique_visitors(r, combine="sum")).values()
    assert not error and smaller


def test_hyperloglog_memory_verdict_fails_for_a_few_visitors(r):
    """The degraded setting: 300 visitors make a small set and a small (sparse) HyperLogLog."""
    error, smaller = exp.unique_visitor_verdicts(exp.run_unique_visitors(r, daily=200, pool=300)).values()
    assert error and not smaller


def test_places_near_lists_the_nearest_first(r):
    index = k("stores")
    assert dt.add_places(r, index, {"near": (2.3522, 48.8566), "mid": (2.3700, 48.8600), "far": (2.2945, 48.8584)}) == 3
    assert dt.add_places(r, index, {"near": (2.3522, 48.8566)}) == 0  # moved, not new
    found = dt.places_near(r, index, 2.3522, 48.8566, radius_km=2)
    assert [name for name, _ in found] == ["near", "mid"]
    assert found[0][1] < 0.01 and 1.2 < found[1][1] < 1.5
    assert [name for name, _ in dt.places_near(r, index, 2.3522, 48.8566, 10, limit=1)] == ["near"]
    assert dt.places_near(r, k("no-index"), 0, 0, 1) == []
    with pytest.raises(ValueError):
        dt.add_places(r, index, {})


# -- the cost experiment -------------------------------------------------------------------------

def test_run_command_cost_measures_every_operation_and_cleans_up(r):
    calls = []
    table = exp.run_command_cost(r, sizes=(100, 1_000), samples=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert list(table.columns) == ["operation", "complexity", "n", "samples", "median_ms", "p95_ms"]
    assert len(table) == len(exp.COST_OPERATIONS) * 2
    assert (table["median_ms"] > 0).all()
    assert list(r.scan_iter(match="course:data_types:cost:*")) == []


def test_growth_divides_largest_by_smallest_n():
    table = pd.DataFrame({"operation": ["A", "A", "B", "B"], "n": [1000, 10, 10, 1000], "median_ms": [4.0, 2.0, 1.0, 1.5]})
    assert exp.growth(table).to_dict() == {"A": 2.0, "B": 1.5}


def test_o1_stays_flat_while_on_grows(r):
    cost = exp.run_command_cost(r, sizes=(100, 100_000), samples=100, slow_samples=5)
    verdicts = exp.command_cost_verdicts(cost)
    assert len(verdicts) == 3 and all(verdicts.values()), verdicts
    assert cost.loc[cost["samples"] < exp.MIN_P95_SAMPLES, "p95_ms"].isna().all()  # no p95 from 5 samples


def test_command_cost_verdicts_fail_when_n_barely_grows(r):
    """The degraded setting: from N=100 to N=1,000 LPOS cannot be told from a round trip, so no claim holds."""
    verdicts = exp.command_cost_verdicts(exp.run_command_cost(r, sizes=(100, 1_000), samples=50))
    assert not any(verdicts.values()), verdicts


def test_one_worker_falls_behind_and_the_keeps_up_verdict_says_false(r):
    table = exp.run_queue_workers(r, k("work"), producer_rate=100, workers=1, work_ms=12.5, seconds=2)
    assert table.attrs["produced"] >= 190 and table.attrs["capacity_per_s"] == 80
    assert table["queue_length"].iloc[-1] >= 20  # the notebook's "falls behind" verdict
    assert not table["queue_length"].max() <= 15  # its "keeps up" verdict, fed one worker: False


def test_two_workers_keep_up_and_the_falls_behind_verdict_says_false(r):
    table = exp.run_queue_workers(r, k("work"), producer_rate=100, workers=2, work_ms=12.5, seconds=2)
    assert table["queue_length"].max() <= 15  # the notebook's "keeps up" verdict
    assert not table["queue_length"].iloc[-1] >= 20  # its "falls behind" verdict, fed two workers: False
    assert table.attrs["processed"] >= table.attrs["produced"] - 15


def test_plots_are_figures(r):
    table = pd.DataFrame({"operation": ["ZRANK"] * 2, "complexity": ["O(log N)"] * 2, "n": [10, 100], "median_ms": [0.1, 0.1]})
    assert exp.plot_command_cost(table).axes[0].get_xscale() == "log"
    simulation = exp.run_queue_simulation(r, k("q"), 2, 1, 5)
    assert exp.plot_queue(simulation).axes[0].get_ylabel() == "jobs waiting (LLEN)"


# -- the queue simulation ------------------------------------------------------------------------

def test_queue_grows_by_the_rate_difference_on_real_redis(r):
    sim = exp.run_queue_simulation(r, k("q"), producer_rate=12, consumer_rate=10, seconds=30)
    assert list(sim["queue_length"]) == [2 * s for s in range(1, 31)]
    assert sim["wait_s"].iloc[-1] == 6.0
    assert r.llen(k("q")) == 60
    assert (r.lindex(k("q"), -1), r.lindex(k("q"), 0)) == ("job:300", "job:359")  # consumed oldest first


def test_queue_drains_once_the_producer_stops(r):
    sim = exp.run_queue_simulation(r, k("q"), producer_rate=30, consumer_rate=10, seconds=20, produce_for=5)
    assert sim["queue_length"].max() == 100
    assert list(sim["queue_length"].iloc[4:]) == [100, 90, 80, 70, 60, 50, 40, 30, 20, 10] + [0] * 6
    assert sim["consumed"].sum() == 150


def test_queue_without_consumer_waits_forever(r):
    sim = exp.run_queue_simulation(r, k("q"), producer_rate=3, consumer_rate=0, seconds=4)
    assert list(sim["queue_length"]) == [3, 6, 9, 12]
    assert sim["wait_s"].iloc[-1] == float("inf")


def test_queue_simulation_rejects_negative_rates(r):
    with pytest.raises(ValueError, match="negative"):
        exp.run_queue_simulation(r, k("q"), -1, 1, 5)


# -- widgets: call their callbacks the way a click does --------------------------------------------

def find(widget, kind, description=None):
    """The first widget of `kind` (and `description`) inside a widget tree."""
    if isinstance(widget, kind) and description in (None, getattr(widget, "description", None)):
        return widget
    for child in getattr(widget, "children", ()):
        found = find(child, kind, description)
        if found is not None:
            return found
    return None


def test_leaderboard_widget_click_adds_points_in_redis(r, board):
    view = exp.leaderboard_widget(r, board)
    find(view, widgets.Button).click()
    assert r.zscore(board, "you") == 100.0
    find(view, widgets.Text).value = "erin"
    find(view, widgets.IntSlider).value = 1000
    find(view, widgets.Button).click()
    assert r.zscore(board, "erin") == 1900.0
    assert find(view, widgets.Label).value == "erin: 1900 points, place 4"


def test_leaderboard_widget_ignores_an_empty_name(r, board):
    view = exp.leaderboard_widget(r, board)
    find(view, widgets.Text).value = "  "
    find(view, widgets.Button).click()
    assert r.zcard(board) == 5
    assert find(view, widgets.Label).value == "Type a player name first."


def test_queue_simulator_widget_runs_on_redis(r):
    view = exp.queue_simulator_widget(r, k("q"))
    find(view, widgets.IntSlider, "seconds").value = 20
    find(view, widgets.IntSlider, "produce for").value = 20
    find(view, widgets.Button).click()
    assert r.llen(k("q")) == 40
    assert find(view, widgets.Label).value == "After 20 s: 40 jobs waiting, longest backlog 40 jobs"


def test_command_cost_widget_shows_progress_and_cleans_up(r):
    view = exp.command_cost_widget(r)
    find(view, widgets.SelectionSlider).value = 1_000
    find(view, widgets.IntSlider, "rounds").value = 10
    find(view, widgets.Button).click()
    progress = find(view, widgets.IntProgress)
    assert (progress.value, progress.max) == (10, 10)
    assert find(view, widgets.Label).value.startswith("Slowdown from smallest to largest N: SISMEMBER ")
    assert list(r.scan_iter(match="course:data_types:cost:*")) == []


def test_widgets_start_in_a_fixed_state(r):
    """nbval compares a widget's text form, so nothing in it may depend on time or data."""
    first = [repr(exp.leaderboard_widget(r, k("board"))), repr(exp.queue_simulator_widget(r, k("q"))),
             repr(exp.command_cost_widget(r))]
    r.zadd(k("board"), {"someone": 1})
    assert [repr(exp.leaderboard_widget(r, k("board"))), repr(exp.queue_simulator_widget(r, k("q"))),
            repr(exp.command_cost_widget(r))] == first


# -- exercises -----------------------------------------------------------------------------------

@pytest.mark.parametrize("checker, solution", [
    (ex.check_top_scores, solutions.top_scores),
    (ex.check_capped_log, solutions.capped_log),
    (ex.check_add_to_cart, solutions.add_to_cart),
])
def test_checkers_pass_the_reference_solutions_and_clean_up(r, checker, solution):
    outcome = evaluate(checker, r, solution)
    assert outcome.passed, str(outcome)
    assert list(r.scan_iter(match="course:data_types:exercise:*")) == []


@pytest.mark.parametrize("checker", [ex.check_top_scores, ex.check_capped_log, ex.check_add_to_cart])
def test_unsolved_stubs_are_not_solved_yet(r, checker):
    def stub(*args):
        raise NotImplementedError

    assert str(evaluate(checker, r, stub)).endswith(
        ": not solved yet - hint: replace `raise NotImplementedError` with your code")


def assert_fails_with(checker, r, wrong, hint):
    outcome = evaluate(checker, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, str(outcome)


def assert_passes(checker, r, answer):
    outcome = evaluate(checker, r, answer)
    assert outcome.passed, str(outcome)


# exercise 1: top scores

def top_ascending(client, board, n):
    return client.zrange(board, 0, n - 1, withscores=True)


def top_right_players_worst_first(client, board, n):
    return client.zrange(board, 0, n - 1, desc=True, withscores=True)[::-1]


def top_inclusive_stop(client, board, n):
    return client.zrange(board, 0, n, desc=True, withscores=True)


def top_without_scores(client, board, n):
    return client.zrange(board, 0, n - 1, desc=True)


def top_sorted_in_python_ignoring_ties(client, board, n):
    return sorted(client.zrange(board, 0, -1, withscores=True), key=lambda pair: -pair[1])[:n]


def top_zero_means_everything(client, board, n):
    """The classic: ZRANGE 0 n-1 with n = 0 asks for 0 .. -1, the whole board."""
    return client.zrange(board, 0, n - 1, desc=True, withscores=True)


def top_as_a_dict(client, board, n):
    return dict(client.zrange(board, 0, n - 1, desc=True, withscores=True)) if n else {}


def top_one_score_per_player(client, board, n):
    players = client.zrange(board, 0, n - 1, desc=True) if n else []
    return [(player, client.zscore(board, player)) for player in players]


def top_assumes_a_full_board(client, board, n):
    ranked = client.zrange(board, 0, n - 1, desc=True, withscores=True)
    return [tuple(ranked[i]) for i in range(n)]


def top_whole_board_sliced_in_python(client, board, n):
    """Right order and ties, one round trip: but every player crosses the network to keep n."""
    return client.zrange(board, 0, -1, desc=True, withscores=True)[:n]


def top_by_score_without_a_limit(client, board, n):
    return client.zrange(board, "+inf", "-inf", desc=True, byscore=True, withscores=True)[:n]


def top_with_the_notebooks_r(client, board, n):
    with connect() as notebook_r:
        return solutions.top_scores(notebook_r, board, n)


@pytest.mark.parametrize("wrong, hint", [
    (top_ascending, "asked for the top 3 of 12 players: expected"),
    (top_right_players_worst_first, "highest score first"),
    (top_inclusive_stop, "stop index is inclusive"),
    (top_without_scores, "list of (player, score) pairs"),
    (top_sorted_in_python_ignoring_ties, "equal scores are out of order"),
    (top_zero_means_everything, "asked for the top 0 of 12 players, got the whole board"),
    (top_as_a_dict, "must return a list of (player, score) pairs, it returned dict"),
    (top_one_score_per_player, "took 4 round trips"),
    (top_assumes_a_full_board, "asked for the top 20 of 12 players, your function raised IndexError"),
    (top_whole_board_sliced_in_python, "read 24 values from the server to keep 3 players"),
    (top_by_score_without_a_limit, "read 24 values from the server to keep 3 players"),
    (top_with_the_notebooks_r, "not the notebook's `r`"),
])
def test_top_scores_checker_fails_wrong_answers(r, wrong, hint):
    assert_fails_with(ex.check_top_scores, r, wrong, hint)


def top_by_score_with_a_limit(client, board, n):
    """Unusual but right: scores from +inf down, LIMIT 0 n (a count of 0 returns nothing), as tuples."""
    return tuple(client.zrange(board, "+inf", "-inf", desc=True, byscore=True, offset=0, num=n, withscores=True))


def top_sized_in_a_transaction(client, board, n):
    """Unusual but right: ZCARD and ZREVRANGE in one MULTI (the count is not needed, but costs one value)."""
    with client.pipeline() as pipe:
        pipe.zcard(board).zrevrange(board, 0, max(n - 1, 0), withscores=True)
        _size, top = pipe.execute()
    return top[:n]


@pytest.mark.parametrize("answer", [top_by_score_with_a_limit, top_sized_in_a_transaction])
def test_top_scores_checker_passes_an_unusual_correct_answer(r, answer):
    assert_passes(ex.check_top_scores, r, answer)


def test_top_returns_nothing_for_n_zero(r, board):
    assert dt.top(r, board, 0) == []


# exercise 2: capped log

def log_untrimmed(client, log, entry, keep):
    client.lpush(log, entry)


def log_inclusive_trim(client, log, entry, keep):
    client.lpush(log, entry)
    client.ltrim(log, 0, keep)


def log_oldest_first(client, log, entry, keep):
    client.rpush(log, entry)
    client.ltrim(log, -keep, -1)


def log_trimmed_before_push(client, log, entry, keep):
    client.ltrim(log, 0, keep - 1)
    client.lpush(log, entry)


def log_push_then_trim(client, log, entry, keep):
    client.lpush(log, entry)
    client.ltrim(log, 0, keep - 1)


LOCK = threading.Lock()


def log_push_then_trim_under_a_lock(client, log, entry, keep):
    with LOCK:  # one lock per process: another app server does not take it
        client.lpush(log, entry)
        client.ltrim(log, 0, keep - 1)


def log_trim_first_to_make_room(client, log, entry, keep):
    if keep > 1:
        client.ltrim(log, 0, keep - 2)  # room for one more...
    else:
        client.delete(log)
    client.lpush(log, entry)  # ...which a crash before this push leaves empty


def log_pipeline_without_transaction(client, log, entry, keep):
    with client.pipeline(transaction=False) as pipe:
        pipe.lpush(log, entry)
        pipe.ltrim(log, 0, keep - 1)
        pipe.execute()


def log_rewritten_from_python(client, log, entry, keep):
    entries = [entry] + client.lrange(log, 0, -1)[:keep - 1]
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(log)
        pipe.rpush(log, *entries)
        pipe.execute()


def log_as_a_set_of_entries(client, log, entry, keep):
    with client.pipeline(transaction=True) as pipe:
        pipe.lrem(log, 0, entry)  # "no duplicates": but a log records every event
        pipe.lpush(log, entry)
        pipe.ltrim(log, 0, keep - 1)
        pipe.execute()


def log_pops_only_when_it_was_full(client, log, entry, keep):
    """Atomic push, but the decision to pop rests on a length read earlier: stale once another app server pushed."""
    length = client.llen(log)
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(log, entry)
        if length >= keep:
            pipe.rpop(log, length - keep + 1)
        pipe.execute()


def log_with_the_notebooks_r(client, log, entry, keep):
    with connect() as notebook_r:
        solutions.capped_log(notebook_r, log, entry, keep)


@pytest.mark.parametrize("wrong, hint", [
    (log_untrimmed, "never holds more than `keep`"),
    (log_inclusive_trim, "one too many"),
    (log_oldest_first, "newest first"),
    (log_trimmed_before_push, "runs before the push"),
    (log_push_then_trim, "died right after round trip 1 of 2 (LPUSH) and left the log with 6 entries (keep=5)"),
    (log_push_then_trim_under_a_lock, "died right after round trip 1 of 2 (LPUSH) and left the log with 6 entries"),
    (log_trim_first_to_make_room, "died right after round trip 1 of 2 (LTRIM) and left the log with 4 entries"),
    (log_pipeline_without_transaction, "one pipeline without MULTI/EXEC"),
    (log_rewritten_from_python, "an entry pushed meanwhile was lost"),
    (log_as_a_set_of_entries, "the log should hold ['logout', 'view', 'buy', 'view', 'view']"),
    (log_pops_only_when_it_was_full, "right after your command number 1 on the log, which then held 6 entries"),
    (log_with_the_notebooks_r, "not the notebook's `r`"),
])
def test_capped_log_checker_fails_wrong_answers(r, wrong, hint):
    assert_fails_with(ex.check_capped_log, r, wrong, hint)


CAPPED_LOG_LUA = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
"""


def log_by_lua(client, log, entry, keep):
    """Unusual but right: one script, which no other client can interrupt."""
    client.eval(CAPPED_LOG_LUA, 1, log, entry, keep)


def log_watched_length_with_retries(client, log, entry, keep):
    """Unusual but right: WATCH the log, read its length, pop only what overflows; retry if it changed."""
    with client.pipeline() as pipe:
        for _ in range(10):
            try:
                pipe.watch(log)
                length = pipe.llen(log)
                pipe.multi()
                pipe.lpush(log, entry)
                if length >= keep:
                    pipe.rpop(log, length - keep + 1)
                pipe.execute()
                return
            except WatchError:
                continue
    raise RuntimeError("the log kept changing")


@pytest.mark.parametrize("answer", [log_by_lua, log_watched_length_with_retries])
def test_capped_log_checker_passes_an_unusual_correct_answer(r, answer):
    assert_passes(ex.check_capped_log, r, answer)


# exercise 3: shopping cart

def cart_overwrites(client, cart, item, quantity):
    if quantity < 1:
        raise ValueError("quantity")
    client.hset(cart, item, quantity)
    return quantity


def cart_returns_nothing(client, cart, item, quantity):
    client.hincrby(cart, item, quantity)


def cart_returns_text(client, cart, item, quantity):
    client.hincrby(cart, item, quantity)
    return client.hget(cart, item)


def cart_replaces_the_hash(client, cart, item, quantity):
    if quantity < 1:
        raise ValueError("quantity")
    total = int(client.hget(cart, item) or 0) + quantity
    client.delete(cart)
    client.hset(cart, item, total)
    return total


def cart_read_then_write(client, cart, item, quantity):
    if quantity < 1:
        raise ValueError("quantity")
    total = int(client.hget(cart, item) or 0) + quantity
    client.hset(cart, item, total)
    return total


def cart_read_then_write_under_a_lock(client, cart, item, quantity):
    if quantity < 1:
        raise ValueError("quantity")
    with LOCK:  # passes a race between threads; not one between app servers
        total = int(client.hget(cart, item) or 0) + quantity
        client.hset(cart, item, total)
    return total


def cart_watch_that_gives_up(client, cart, item, quantity):
    if quantity < 1:
        raise ValueError("quantity")
    with client.pipeline() as pipe:
        pipe.watch(cart)
        total = int(pipe.hget(cart, item) or 0) + quantity
        pipe.multi()
        pipe.hset(cart, item, total)
        try:
            pipe.execute()
        except WatchError:
            pass  # gives up: the add is silently dropped
    return total


def cart_reads_back_after_adding(client, cart, item, quantity):
    """Atomic add, but the quantity returned is read again afterwards: it includes other app servers' adds."""
    if quantity < 1:
        raise ValueError("quantity")
    client.hincrby(cart, item, quantity)
    return int(client.hget(cart, item))


def cart_retries_for_ever(client, cart, item, quantity):
    """A retry that can never succeed: a note written through the client (another connection) changes the
    watched cart every time, so EXEC always aborts and the loop never ends."""
    if quantity < 1:
        raise ValueError("quantity")
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(cart)
                total = int(pipe.hget(cart, item) or 0) + quantity
                client.hset(cart, "last-added", item)
                pipe.multi()
                pipe.hset(cart, item, total)
                pipe.execute()
                return total
            except WatchError:
                continue


def cart_accepts_any_quantity(client, cart, item, quantity):
    return client.hincrby(cart, item, quantity)


def cart_checks_after_writing(client, cart, item, quantity):
    total = client.hincrby(cart, item, quantity)
    if quantity < 1:
        raise ValueError("quantity")
    return total


@pytest.mark.parametrize("wrong, hint", [
    (cart_overwrites, "do not overwrite it"),
    (cart_returns_nothing, "returned None"),
    (cart_returns_text, "must return the item's new quantity as an int, it returned str"),
    (cart_replaces_the_hash, "other items must stay"),
    (cart_read_then_write, "expected 17, the cart holds 7"),
    (cart_read_then_write_under_a_lock, "expected 17, the cart holds 7"),
    (cart_watch_that_gives_up, "your own add of 3 was dropped"),
    (cart_reads_back_after_adding, "and you returned 17: return the quantity your own add made (7 here)"),
    (cart_accepts_any_quantity, "adding 0 apples was accepted"),
    (cart_retries_for_ever, "sent 1000 round trips and had not returned: a loop that never ends"),
    (cart_checks_after_writing, "raised ValueError but changed the cart"),
])
def test_add_to_cart_checker_fails_wrong_answers(r, wrong, hint):
    assert_fails_with(ex.check_add_to_cart, r, wrong, hint)


def cart_watch_with_bounded_retries(client, cart, item, quantity):
    """Unusual but right: optimistic locking that retries when the item changed under it."""
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    with client.pipeline() as pipe:
        for _ in range(10):
            try:
                pipe.watch(cart)
                total = int(pipe.hget(cart, item) or 0) + quantity
                pipe.multi()
                pipe.hset(cart, item, total)
                pipe.execute()
                return total
            except WatchError:
                continue
    raise RuntimeError("the cart kept changing")


def cart_add_and_read_in_one_transaction(client, cart, item, quantity):
    """Unusual but right: HINCRBY and HGET in one MULTI, so the read sees exactly this add."""
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    with client.pipeline(transaction=True) as pipe:
        _, total = pipe.hincrby(cart, item, quantity).hget(cart, item).execute()
    return int(total)


@pytest.mark.parametrize("answer", [cart_watch_with_bounded_retries, cart_add_and_read_in_one_transaction])
def test_add_to_cart_checker_passes_an_unusual_correct_answer(r, answer):
    assert_passes(ex.check_add_to_cart, r, answer)
