"""Chapter 07: pipelines, round-trip counting, chunking, the experiments, widget and exercise checkers."""

import ipywidgets as widgets
import pytest
import redis

from course_lib.exercises import evaluate
from course_lib.exercises.pipelines import check_bulk_load, check_read_profiles
from course_lib.exercises.solutions.pipelines import bulk_load, read_profiles
from course_lib.experiments import pipelines as exp
from course_lib.keys import hash_tag, key
from course_lib.pipelines import (RoundTripCounter, async_client, batched, command_calls, get_concurrently,
                                  get_pipelined, guide_batch, run_coroutine)


@pytest.fixture
def counter(r):
    counting = RoundTripCounter(r)
    yield counting
    counting.close()


def test_counter_counts_one_round_trip_per_command_and_one_per_pipeline(counter):
    for n in range(5):
        counter.client.set(key("pipelines", "k", n), n)
    assert counter.round_trips == 5 and counter.batch_sizes == [1] * 5
    counter.reset()
    with counter.client.pipeline(transaction=False) as pipe:
        for n in range(5):
            pipe.get(key("pipelines", "k", n))
        assert pipe.execute() == ["0", "1", "2", "3", "4"]
    assert counter.round_trips == 1 and counter.batch_sizes == [5] and counter.commands == {"GET": 5}


def test_counter_ignores_the_handshake_of_a_new_connection(r):
    counting = RoundTripCounter(r)
    try:
        counting.client.ping()
        assert counting.round_trips == 1 and counting.commands == {"PING": 1}
    finally:
        counting.close()


def test_guide_batch_is_a_transaction_in_one_round_trip(r, counter):
    before = command_calls(r, "multi")
    items = {key("pipelines", "g", n): str(n) for n in range(3)}
    assert guide_batch(counter.client, items) == [True, True, True]
    assert counter.batch_sizes == [5] and counter.commands["MULTI"] == counter.commands["EXEC"] == 1
    assert command_calls(r, "multi") == before + 1
    assert r.mget(list(items)) == ["0", "1", "2"]


def test_plain_pipeline_sends_no_multi(r):
    before = command_calls(r, "multi")
    with r.pipeline(transaction=False) as pipe:
        pipe.set(key("pipelines", "p"), "1")
        pipe.execute()
    assert command_calls(r, "multi") == before


def test_command_calls_is_zero_for_a_command_never_run(r):
    assert command_calls(r, "nosuchcommand") == 0


def test_one_bad_command_does_not_stop_the_others(r):
    name, other = key("pipelines", "list"), key("pipelines", "after")
    r.rpush(name, "a")
    with r.pipeline(transaction=False) as pipe:
        pipe.incr(name)
        pipe.set(other, "ran")
        results = pipe.execute(raise_on_error=False)
    assert isinstance(results[0], redis.ResponseError) and results[1] is True
    assert r.get(other) == "ran"


def test_batched_chunks_and_yields_errors_in_place(r, counter):
    commands = [("SET", key("pipelines", "b", n), n) for n in range(25)] + [("LPUSH", key("pipelines", "b", 0), "x")]
    replies = list(batched(counter.client, commands, size=10))
    assert counter.batch_sizes == [10, 10, 6] and counter.commands["MULTI"] == 0
    assert replies[:25] == [True] * 25 and isinstance(replies[25], redis.ResponseError)
    with pytest.raises(ValueError):
        list(batched(r, commands, size=0))


def test_batched_queue_time_errors_fail_alone_in_a_pipeline_but_abort_a_transactions_chunk(r):
    names = [key("pipelines", "q", n) for n in range(4)]
    commands = [("SET", names[0], 0), ("NOSUCHCOMMAND", names[1]), ("SET", names[2]), ("SET", names[3], 3)]
    replies = list(batched(r, commands, size=10))  # unknown command, wrong arity: each fails alone
    assert [type(reply).__name__ for reply in replies] == ["bool", "ResponseError", "ResponseError", "bool"]
    assert r.exists(*names) == 2
    r.delete(*names)
    chunks = batched(r, [("SET", names[0], 0), ("SET", names[1], 1)] + commands, size=2, transaction=True)
    assert next(chunks) is True and next(chunks) is True  # the first chunk ran
    with pytest.raises(redis.ResponseError, match="unknown command"):  # raised although raise_on_error=False
        list(chunks)
    assert r.mget(names) == ["0", "1", None, None]  # the first chunk only: EXECABORT discarded the second
    wrongtype = [("SET", names[2], 2), ("LPUSH", names[0], "x"), ("SET", names[3], 3)]
    replies = list(batched(r, wrongtype, size=10, transaction=True))  # a run-time error: the rest ran
    assert isinstance(replies[1], redis.ResponseError) and r.mget(names[2:]) == ["2", "3"]


def test_batched_on_a_cluster_spans_slots(rc):
    names = [key("pipelines", "c", n) for n in range(50)]
    assert list(batched(rc, (("SET", n, "v") for n in names), size=20)) == [True] * 50
    assert len({rc.keyslot(n) for n in names}) > 1 and rc.mget_nonatomic(names) == ["v"] * 50


def test_cluster_transaction_needs_one_slot(rc):
    with pytest.raises(redis.CrossSlotTransactionError):
        with rc.pipeline(transaction=True) as pipe:
            pipe.set(key("pipelines", "x"), 1)
            pipe.set(key("pipelines", "y"), 2)
            pipe.execute()
    tag = hash_tag("cart", 7)
    with rc.pipeline(transaction=True) as pipe:
        pipe.set(key("pipelines", tag, "x"), 1)
        pipe.set(key("pipelines", tag, "y"), 2)
        assert pipe.execute() == ["OK", "OK"]  # the cluster transaction returns EXEC's raw replies


def test_run_round_trips_and_batch_sizes(r):
    trips = exp.run_round_trips(r, commands=20, rounds=3)
    assert trips["round_trips"].tolist() == [20, 1, 1] and (trips["ops_per_s"] > 0).all()
    assert exp.run_round_trips(r, commands=20, rounds=1, pipeline_size=8)["round_trips"].tolist() == [20, 3, 3]
    sizes = exp.run_batch_sizes(r, sizes=(1, 10), operations=100, repeats=1)
    assert sizes["round_trips"].tolist() == [100, 10] and (sizes["ops_per_s"] > 0).all()
    assert exp.run_batch_sizes(r, sizes=(10,), operations=100, repeats=1, pipelined=False)["round_trips"][0] == 100
    assert exp.plot_batch_sizes(sizes).axes[0].get_xscale() == "log"
    assert not list(r.scan_iter(match="course:pipelines:*"))


# -- the notebook's verdicts hold as measured, and turn False in a degraded setting ---------------------------

def test_round_trip_verdict_fails_when_the_pipeline_saves_no_round_trip(r):
    assert all(exp.round_trip_verdicts(exp.run_round_trips(r, commands=100, rounds=9)).values())
    degraded = exp.run_round_trips(r, commands=100, rounds=9, pipeline_size=1)  # one command per pipeline
    assert not any(exp.round_trip_verdicts(degraded).values())


def test_batch_size_verdicts_fail_without_pipelining_and_across_a_slow_network(r):
    assert all(exp.batch_size_verdicts(exp.run_batch_sizes(r, sizes=(1, 100, 1000), repeats=3)).values())
    unpipelined = exp.batch_size_verdicts(exp.run_batch_sizes(r, sizes=(1, 100), repeats=2, pipelined=False))
    assert unpipelined["throughput rises: batches of 100 reach at least 3x the ops/s of batches of 1"] is False
    far = exp.batch_size_verdicts(exp.run_batch_sizes(r, sizes=(100, 1000), repeats=1, network_ms=50))
    assert far == {"then flattens: batches of 1000 gain less than 2x over batches of 100": False,
                   "pipelined SETs from one Python client reach at least 30,000 ops/s": False}


def test_run_interleaving_lets_another_client_in_only_without_multi(r):
    other = redis.Redis(connection_pool=redis.ConnectionPool(**r.connection_pool.connection_kwargs))
    try:
        frame = exp.run_interleaving(r, other).set_index("mode")
    finally:
        other.close()
    assert frame.loc["pipeline(transaction=False)", "get"] == "other client"
    assert frame.loc["pipeline() (MULTI/EXEC)", "get"] == "before"
    assert frame.loc["pipeline() (MULTI/EXEC)", "blpop"] is None


async def _read_back(aclient, names, size):
    try:
        return await get_concurrently(aclient, names), await get_pipelined(aclient, names, size)
    finally:
        await aclient.aclose()
        await aclient.connection_pool.disconnect()


@pytest.mark.parametrize("size", [None, 2, 1])
def test_async_concurrent_and_pipelined_gets_read_the_same_values_in_order(r, size):
    names = [key("pipelines", "async", n) for n in range(5)]
    r.mset({name: f"v{n}" for n, name in enumerate(names[:4])})  # the last one is missing
    concurrent, pipelined = run_coroutine(_read_back(async_client(r, max_connections=3), names, size))
    assert concurrent == pipelined == ["v0", "v1", "v2", "v3", None]
    assert run_coroutine(_read_back(async_client(r), [], None)) == ([], [])


def test_run_coroutine_works_inside_a_running_event_loop(r):
    import asyncio

    async def inside_a_loop():  # as in a Jupyter cell: a loop is already running here
        return run_coroutine(asyncio.sleep(0, result="ran"))

    assert asyncio.run(inside_a_loop()) == "ran"


def test_run_asyncio_counts_connections_and_round_trips(r):
    frame = exp.run_asyncio(r, keys=200, rounds=1, max_connections=7).set_index("way")
    assert frame["connections"].to_dict() == {exp.ONE_AT_A_TIME: 1, exp.GATHERED: 7, exp.PIPELINED: 1}
    assert frame["round_trips"].to_dict() == {exp.ONE_AT_A_TIME: 200, exp.GATHERED: 200, exp.PIPELINED: 1}
    assert not list(r.scan_iter(match="course:pipelines:*"))


def test_asyncio_verdict_fails_when_the_pipeline_holds_one_command(r):
    assert all(exp.asyncio_verdicts(exp.run_asyncio(r, keys=1000, rounds=3)).values())
    degraded = exp.run_asyncio(r, keys=1000, rounds=3, pipeline_size=1)  # a round trip per GET again
    assert not any(exp.asyncio_verdicts(degraded).values())


def test_multi_key_verdicts_fail_with_one_key_per_command(r):
    frame = exp.run_multi_key(r, keys=1000, rounds=9)
    assert frame.set_index("way")["commands"].to_dict() == {"MSET": 1, "pipeline of SETs": 1000,
                                                             "MGET": 1, "pipeline of GETs": 1000}
    assert all(exp.multi_key_verdicts(frame).values())
    degraded = exp.multi_key_verdicts(exp.run_multi_key(r, keys=1000, rounds=9, per_command=1))
    assert degraded["every way took one round trip"]
    assert not degraded["MSET is at least 3x faster than a pipeline of SETs"]
    assert not degraded["MGET is at least 3x faster than a pipeline of GETs"]
    assert not list(r.scan_iter(match="course:pipelines:*"))


def test_widget_starts_fixed_and_measures_on_change(r):
    view = exp.batch_size_widget(r)
    status = view.children[1]
    assert isinstance(status, widgets.Label) and status.value.startswith("Pick a batch size")
    view.children[0].children[0].value = 1000
    assert status.value.startswith("batch size 1000:") and "(2 round trips)" in status.value


# -- exercises: the checkers fail every wrong answer with its hint, and pass unusual right ones -------------

def bulk_one_by_one(client, items):
    for name, value in items.items():
        client.set(name, value)


def bulk_one_giant_pipeline(client, items):
    with client.pipeline(transaction=False) as pipe:
        for name, value in items.items():
            pipe.set(name, value)
        pipe.execute()


def bulk_one_mset(client, items):
    if items:
        client.mset(items)


def bulk_default_pipeline(client, items):
    names = list(items)
    for first in range(0, len(names), 1000):
        with client.pipeline() as pipe:  # transaction=True by default: MULTI/EXEC around each chunk
            for name in names[first:first + 1000]:
                pipe.set(name, items[name])
            pipe.execute()


def bulk_forgets_the_last_chunk(client, items):
    names = list(items)
    for chunk in range(len(names) // 1000):
        client.mset({name: items[name] for name in names[chunk * 1000:(chunk + 1) * 1000]})


def bulk_skips_empty_values(client, items):
    bulk_load(client, {name: value for name, value in items.items() if value})


def bulk_chunks_of_1001(client, items):
    pairs = list(items.items())
    for first in range(0, len(pairs), 1001):
        client.mset(dict(pairs[first:first + 1001]))


def bulk_mset_even_when_empty(client, items):
    pairs = list(items.items())
    first = 0
    while True:  # "do ... while": one MSET even for an empty dict
        client.mset(dict(pairs[first:first + 1000]))
        first += 1000
        if first >= len(pairs):
            return


@pytest.mark.parametrize("wrong, hint", [
    (bulk_one_by_one, "5000 items took 5000 round trips (at most 10)"),
    (bulk_one_giant_pipeline, "one round trip carried 5000 keys"),
    (bulk_one_mset, "one round trip carried 5000 keys"),
    (bulk_chunks_of_1001, "one round trip carried 1001 keys"),
    (bulk_default_pipeline, "sent MULTI/EXEC"),
    (bulk_forgets_the_last_chunk, "with 1500 items, 500 of 1500 keys are missing"),
    (bulk_skips_empty_values, "an empty string included"),
    (bulk_mset_even_when_empty, "called with an empty dict, your function raised ResponseError"),
])
def test_bulk_load_checker_fails_wrong_answers_with_their_hint(r, wrong, hint):
    outcome = evaluate(check_bulk_load, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def test_bulk_load_checker_says_when_the_notebooks_r_was_used(r):
    outcome = evaluate(check_bulk_load, r, lambda client, items: bulk_load(r, items))
    assert outcome.status == "failed" and "not the notebook's `r`" in outcome.hint


def bulk_mset_per_chunk(client, items):
    """Unusual but right: one MSET of at most 1,000 pairs per round trip (a single command each)."""
    pairs = list(items.items())
    for first in range(0, len(pairs), 1000):
        client.mset(dict(pairs[first:first + 1000]))


def bulk_half_chunks(client, items):
    """Right too: pipelines of 500, twice the fewest round trips."""
    pairs = list(items.items())
    for first in range(0, len(pairs), 500):
        with client.pipeline(transaction=False) as pipe:
            for name, value in pairs[first:first + 500]:
                pipe.set(name, value)
            pipe.execute()


@pytest.mark.parametrize("right", [bulk_load, bulk_mset_per_chunk, bulk_half_chunks])
def test_bulk_load_checker_passes_right_answers(r, right):
    assert evaluate(check_bulk_load, r, right).passed
    assert not list(r.scan_iter(match="course:pipelines:*"))


def read_one_by_one(client, names):
    found = {name: client.hgetall(name) for name in names}
    return {name: fields for name, fields in found.items() if fields}


def read_keeps_missing(client, names):
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        return dict(zip(names, pipe.execute()))


def read_exists_first(client, names):
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(name)
        present = [name for name, there in zip(names, pipe.execute()) if there]
    with client.pipeline(transaction=False) as pipe:
        for name in present:
            pipe.hgetall(name)
        return dict(zip(present, pipe.execute()))


def read_returns_a_list(client, names):
    return list(read_profiles(client, names).items())


def read_drops_empty_names(client, names):
    return {name: fields for name, fields in read_profiles(client, names).items() if fields.get("name")}


def read_none_for_no_names(client, names):
    return read_profiles(client, names) if names else None


@pytest.mark.parametrize("wrong, hint", [
    (read_one_by_one, "that took 20 round trips"),
    (read_keeps_missing, "5 names of missing hashes are in your dict"),
    (read_exists_first, "that took 2 round trips (20 EXISTS | 15 HGETALL)"),
    (read_returns_a_list, "must return a dict of name -> fields, it returned list"),
    (read_drops_empty_names, "1 existing hashes are missing from your dict"),
    (read_none_for_no_names, "returned None; it must return a dict (an empty one for an empty list)"),
])
def test_read_profiles_checker_fails_wrong_answers_with_their_hint(r, wrong, hint):
    outcome = evaluate(check_read_profiles, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def test_read_profiles_checker_says_when_the_notebooks_r_was_used(r):
    outcome = evaluate(check_read_profiles, r, lambda client, names: read_profiles(r, names))
    assert outcome.status == "failed" and "not the notebook's `r`" in outcome.hint


def read_in_a_transaction(client, names):
    """Unusual but right: MULTI/EXEC also travels in one round trip (and reads one snapshot)."""
    with client.pipeline(transaction=True) as pipe:
        for name in names:
            pipe.hgetall(name)
        return {name: fields for name, fields in zip(names, pipe.execute()) if fields}


@pytest.mark.parametrize("right", [read_profiles, read_in_a_transaction])
def test_read_profiles_checker_passes_right_answers(r, right):
    assert evaluate(check_read_profiles, r, right).passed


def test_stubs_are_not_solved_yet(r):
    def stub(*_args):
        raise NotImplementedError

    for checker in (check_bulk_load, check_read_profiles):
        assert evaluate(checker, r, stub).status == "not solved yet"
