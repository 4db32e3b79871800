"""Chapter 07's experiments: each `run_*` returns a DataFrame; `batch_size_widget` wraps one for the learner.

Keys written (all under `course:pipelines:`, deleted again when each run ends):
- `bench:<n>`: strings, the SETs of `run_round_trips` and `run_batch_sizes`;
- `interleave:seen` (string) and `interleave:gate` (list): `run_interleaving`;
- `multi:{batch}:<n>`: strings, `run_multi_key` and `run_asyncio`.

The widget starts in a fixed state (nbval compares its text form) and measures only when the
learner moves its slider or presses its button.
"""

from __future__ import annotations

import time
import uuid

import pandas as pd

from course_lib.concurrency import run_together, wait_for
from course_lib.keys import delete_prefix, key
from course_lib.measure import latencies, take_turns
from course_lib.pipelines import (RoundTripCounter, async_client, get_concurrently, get_pipelined,
                                  run_coroutine)

CHAPTER = "pipelines"


def _bench_keys(n: int) -> list[str]:
    return [key(CHAPTER, "bench", i) for i in range(n)]


def _set_each(client, names: list[str]) -> None:
    for name in names:
        client.set(name, "x")


def _set_pipelined(client, names: list[str], transaction: bool, size: int | None = None,
                   network_ms: float = 0.0) -> None:
    """SET every name in pipelines of `size` commands (None: all in one), each round trip `network_ms` slower."""
    size = size or len(names)
    for first in range(0, len(names), size):
        with client.pipeline(transaction=transaction) as pipe:
            for name in names[first:first + size]:
                pipe.set(name, "x")
            pipe.execute()
        if network_ms:
            time.sleep(network_ms / 1000)  # stands for the wire: a server farther away than loopback


def run_round_trips(client, commands: int = 100, rounds: int = 20, pipeline_size: int | None = None) -> pd.DataFrame:
    """`commands` SETs sent three ways, taking turns `rounds` times: one by one, pipelined, pipelined in MULTI/EXEC.

    `pipeline_size` caps the commands per pipeline in the two pipelined ways (None: all in one);
    a size of 1 is "pipelining" that saves no round trip, the setting that shows the verdict fail.
    Returns one row per way: method, round_trips, median_ms (for all `commands`, its quickest turn: see
    `measure.take_turns`), per_op_us, ops_per_s.
    """
    names = _bench_keys(commands)
    trips = -(-commands // (pipeline_size or commands))
    ways = {
        "separate SETs": (commands, lambda: _set_each(client, names)),
        "pipeline(transaction=False)": (trips, lambda: _set_pipelined(client, names, False, pipeline_size)),
        "pipeline() (MULTI/EXEC)": (trips, lambda: _set_pipelined(client, names, True, pipeline_size)),
    }
    quickest = take_turns({way: run for way, (_, run) in ways.items()}, rounds, warmup=0)
    client.delete(*names)
    rows = []
    for way, (round_trips, _) in ways.items():
        median = quickest[way]
        rows.append({"method": way, "round_trips": round_trips, "median_ms": round(median * 1000, 3),
                     "per_op_us": round(median / commands * 1e6, 2), "ops_per_s": round(commands / median)})
    return pd.DataFrame(rows)


def round_trip_verdicts(trips: pd.DataFrame) -> dict[str, bool]:
    """The claim `run_round_trips` tests: the pipeline at least 3x faster than separate SETs (medians)."""
    median = trips.set_index("method")["median_ms"]
    return {"a pipeline of 100 SETs is at least 3x faster than 100 separate SETs":
            bool(median["separate SETs"] >= 3 * median["pipeline(transaction=False)"])}


def _throughput(client, names: list[str], size: int, pipelined: bool = True, network_ms: float = 0.0) -> float:
    """SETs per second for one pass over `names` in pipelines of `size` (or one by one if not `pipelined`)."""
    start = time.perf_counter()
    if pipelined:
        _set_pipelined(client, names, transaction=False, size=size, network_ms=network_ms)
    else:
        for first in range(0, len(names), size):
            _set_each(client, names[first:first + size])
    return len(names) / (time.perf_counter() - start)


def measure_batch_size(client, size: int, operations: int = 2000) -> float:
    """SETs per second when `operations` SETs go in pipelines of `size` (one pass)."""
    names = _bench_keys(operations)
    ops = _throughput(client, names, size)
    client.delete(*names)
    return ops


def run_batch_sizes(client, sizes=(1, 10, 100, 1000), operations: int = 2000, repeats: int = 5,
                    pipelined: bool = True, network_ms: float = 0.0) -> pd.DataFrame:
    """Throughput of pipelined SETs for each batch size. Returns rows: batch_size, round_trips, ops_per_s.

    The sizes take turns `repeats` times and each keeps its best pass: a pass at a large size lasts
    a few milliseconds, so one moment of load from another program would otherwise decide it.
    Two settings change what is measured: `pipelined=False` sends each "batch" one SET at a time
    (batching without pipelining), and `network_ms` adds that long to every pipeline's round trip,
    as a server farther away than loopback would (simulated with a sleep after each pipeline).
    """
    names = _bench_keys(operations)
    best = dict.fromkeys(sizes, 0.0)
    for _ in range(repeats):
        for size in sizes:
            best[size] = max(best[size], _throughput(client, names, size, pipelined, network_ms))
    client.delete(*names)
    return pd.DataFrame([{"batch_size": size, "round_trips": -(-operations // size) if pipelined else operations,
                          "ops_per_s": round(best[size])} for size in sizes])


def batch_size_verdicts(curve: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_batch_sizes` tests on loopback, those whose batch sizes the curve has.

    Rises: batches of 100 reach 3x the ops/s of batches of 1 (round trips dominate a batch of 1).
    Flattens: 1000 gain less than 2x over 100 (on loopback the client's own work per command
    dominates by then; across a slow network the gain is far larger). Reaches: 30,000 SETs per second
    on loopback (across a network with 50 ms round trips, not even batches of 1,000 get there).
    """
    ops = curve.set_index("batch_size")["ops_per_s"]
    claims = {}
    if {1, 100} <= set(ops.index):
        claims["throughput rises: batches of 100 reach at least 3x the ops/s of batches of 1"] = \
            bool(ops[100] >= 3 * ops[1])
    if {100, 1000} <= set(ops.index):
        claims["then flattens: batches of 1000 gain less than 2x over batches of 100"] = bool(ops[1000] < 2 * ops[100])
    claims["pipelined SETs from one Python client reach at least 30,000 ops/s"] = bool(ops.max() >= 30_000)
    return claims


def plot_batch_sizes(frame: pd.DataFrame):
    """Throughput against batch size, both axes logarithmic."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(frame["batch_size"], frame["ops_per_s"], marker="o")
    axes.set(xscale="log", yscale="log", xlabel="commands per pipeline (batch size)",
             ylabel="SETs per second", title="One client, pipelined SETs")
    axes.grid(True, which="both", alpha=0.3)
    plt.close(figure)
    return figure


def run_interleaving(client, other, timeout: float = 3.0) -> pd.DataFrame:
    """Show that another client's command runs between two commands of one pipeline.

    The pipeline (transaction=False) is: SET seen "before", BLPOP gate, GET seen. The BLPOP
    parks the pipeline's connection on the server; a second client (`other`) waits until it reads
    "before" (the pipeline's SET has run, its BLPOP is next), then SETs seen "other client" and
    pushes to the gate. No timing decides the outcome: each step waits for the previous one (and
    on a shared server no other client's blocked command can be mistaken for the pipeline's). The
    same three commands in MULTI/EXEC run back to back (BLPOP never blocks inside a transaction), so
    nothing gets in.

    Returns rows: mode, blpop (what it returned), get (the value the pipeline's GET read).
    """
    seen, gate = key(CHAPTER, "interleave", "seen"), key(CHAPTER, "interleave", "gate")
    client.delete(seen, gate)

    def pipeline_of_three(transaction: bool) -> list:
        with client.pipeline(transaction=transaction) as pipe:
            pipe.set(seen, "before")
            pipe.blpop([gate], timeout=timeout)
            pipe.get(seen)
            return pipe.execute()

    def interloper() -> None:
        wait_for(lambda: other.get(seen) == "before", timeout, "the pipeline's SET (its BLPOP comes next)")
        other.set(seen, "other client")
        other.rpush(gate, "go")

    results = run_together(lambda slot: pipeline_of_three(False) if slot == 0 else interloper(),
                           threads=2, timeout=timeout + 5, what="pipeline interleaving")
    plain = results[0]
    in_multi = pipeline_of_three(True)
    delete_prefix(client, key(CHAPTER, "interleave") + ":")
    return pd.DataFrame([
        {"mode": "pipeline(transaction=False)", "blpop": plain[1], "get": plain[2]},
        {"mode": "pipeline() (MULTI/EXEC)", "blpop": in_multi[1], "get": in_multi[2]},
    ])


def _multi_keys(n: int) -> list[str]:
    # one hash tag: on a cluster MGET/MSET need every key in one slot (here the course's standalone server)
    return [key(CHAPTER, "multi", "{batch}", i) for i in range(n)]


def _chunks(names: list[str], size: int) -> list[list[str]]:
    return [names[first:first + size] for first in range(0, len(names), size)]


def run_multi_key(client, keys: int = 1000, rounds: int = 20, per_command: int | None = None) -> pd.DataFrame:
    """`keys` strings written and read two ways, taking turns `rounds` times: MSET/MGET against a
    pipeline of one SET/GET per key.

    Every way is one round trip (counted by a `RoundTripCounter`); what differs is the number of
    commands the client builds and parses and the server dispatches. `per_command` caps the keys of
    one MSET/MGET (None: all in one): with 1, "MGET" is a pipeline of single-key MGETs, the setting
    that shows the verdicts fail.

    Each way keeps its best run: an MGET of 1,000 keys lasts well under a millisecond, so one moment
    of load from another program (the server waiting for a core) would otherwise decide it.

    Returns rows: way, round_trips, commands (per run of the way), best_ms.
    """
    names = _multi_keys(keys)
    per_command = per_command or keys
    counter = RoundTripCounter(client)
    c = counter.client

    def mset() -> None:
        with c.pipeline(transaction=False) as pipe:
            for chunk in _chunks(names, per_command):
                pipe.mset(dict.fromkeys(chunk, "x"))
            pipe.execute()

    def mget() -> None:
        with c.pipeline(transaction=False) as pipe:
            for chunk in _chunks(names, per_command):
                pipe.mget(chunk)
            pipe.execute()

    def pipelined(command: str) -> None:
        with c.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(name, "x") if command == "SET" else pipe.get(name)
            pipe.execute()

    ways = {"MSET": mset, "pipeline of SETs": lambda: pipelined("SET"),
            "MGET": mget, "pipeline of GETs": lambda: pipelined("GET")}
    times: dict[str, list[float]] = {way: [] for way in ways}
    trips: dict[str, tuple[int, int]] = {}
    for _ in range(rounds):
        for way, run in ways.items():
            counter.reset()
            times[way] += latencies(run, samples=1, warmup=0)
            trips[way] = (counter.round_trips, sum(counter.batch_sizes))
    counter.close()
    client.delete(*names)
    return pd.DataFrame([{"way": way, "round_trips": trips[way][0], "commands": trips[way][1],
                          "best_ms": round(min(times[way]) * 1000, 3)} for way in ways])


def multi_key_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_multi_key` tests: one round trip each way, yet one MSET/MGET is at least 3x
    faster than a pipeline of 1,000 SETs/GETs (one command to build, dispatch and answer, not 1,000)."""
    best = frame.set_index("way")["best_ms"]
    return {
        "every way took one round trip": bool((frame["round_trips"] == 1).all()),
        "MSET is at least 3x faster than a pipeline of SETs": bool(best["pipeline of SETs"] >= 3 * best["MSET"]),
        "MGET is at least 3x faster than a pipeline of GETs": bool(best["pipeline of GETs"] >= 3 * best["MGET"]),
    }


ONE_AT_A_TIME = "await one GET at a time"
GATHERED = "asyncio.gather: a coroutine per GET"
PIPELINED = "one pipeline"


async def _asyncio_ways(client, names: list[str], rounds: int, max_connections: int,
                        pipeline_size: int | None) -> list[dict]:
    async def one_at_a_time(aclient) -> None:
        for name in names:
            await aclient.get(name)

    ways = {ONE_AT_A_TIME: one_at_a_time, GATHERED: lambda aclient: get_concurrently(aclient, names),
            PIPELINED: lambda aclient: get_pipelined(aclient, names, pipeline_size)}
    # a client (pool) per way, named, so CLIENT LIST counts the connections each way opened
    tag = uuid.uuid4().hex[:8]
    clients = {way: async_client(client, max_connections, client_name=f"course-async-{n}-{tag}")
               for n, way in enumerate(ways)}
    times: dict[str, list[float]] = {way: [] for way in ways}
    try:
        for _ in range(rounds):
            for way, run in ways.items():
                start = time.perf_counter()
                await run(clients[way])
                times[way].append(time.perf_counter() - start)
        listed = [entry["name"] for entry in await clients[ONE_AT_A_TIME].client_list()]
    finally:
        for aclient in clients.values():
            await aclient.aclose()
            await aclient.connection_pool.disconnect()
    pipelines = -(-len(names) // (pipeline_size or len(names)))
    trips = {ONE_AT_A_TIME: len(names), GATHERED: len(names), PIPELINED: pipelines}
    rows = []
    for n, way in enumerate(ways):
        best = min(times[way])
        rows.append({"way": way, "connections": listed.count(f"course-async-{n}-{tag}"), "round_trips": trips[way],
                     "best_ms": round(best * 1000, 2), "gets_per_s": round(len(names) / best)})
    return rows


def run_asyncio(client, keys: int = 1000, rounds: int = 5, max_connections: int = 50,
                pipeline_size: int | None = None) -> pd.DataFrame:
    """`keys` GETs with `redis.asyncio`, three ways taking turns `rounds` times: awaited one at a
    time, all at once as coroutines sharing one pool (`get_concurrently`), and pipelined (`get_pipelined`).

    Each way has its own pool of at most `max_connections`; `connections` is how many it had
    opened (CLIENT LIST, by client name). `pipeline_size` caps the GETs per pipeline (None: all in
    one); 1 is the setting that shows the verdict fail. Runs in a loop of its own
    (`run_coroutine`), so it works from a notebook, a test or a script alike.

    Each way keeps its best run, so that a moment of load from another program does not decide it.

    Returns rows: way, connections, round_trips, best_ms, gets_per_s.
    """
    names = _multi_keys(keys)
    client.mset(dict.fromkeys(names, "x"))
    try:
        rows = run_coroutine(_asyncio_ways(client, names, rounds, max_connections, pipeline_size))
    finally:
        client.delete(*names)
    return pd.DataFrame(rows)


def asyncio_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """The claim `run_asyncio` tests: one pipeline does the GETs at least 3x faster than as many
    concurrent coroutines (which also hold a whole pool of connections to do it)."""
    best = frame.set_index("way")["best_ms"]
    return {"one pipeline of 1,000 GETs is at least 3x faster than 1,000 concurrent coroutines":
            bool(best[GATHERED] >= 3 * best[PIPELINED])}


def batch_size_widget(client):
    """A batch-size slider: each change measures pipelined SETs at that size and shows the ops/s."""
    import ipywidgets as widgets

    size = widgets.SelectionSlider(options=[1, 10, 100, 1000], value=100, description="batch size")
    run = widgets.Button(description="Measure", button_style="primary")
    status = widgets.Label(value="Pick a batch size; each change (or Measure) times 2,000 pipelined SETs.")

    def measure(_=None) -> None:
        status.value = f"measuring batch size {size.value}..."
        ops = measure_batch_size(client, size.value, operations=2000)
        status.value = f"batch size {size.value}: {ops:,.0f} SETs per second ({-(-2000 // size.value)} round trips)"

    size.observe(measure, names="value")
    run.on_click(measure)
    return widgets.VBox([widgets.HBox([size, run]), status])
