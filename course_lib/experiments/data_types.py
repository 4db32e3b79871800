"""Chapter 01's experiments: each `run_*` returns a DataFrame; each `*_widget` wraps a run for the learner.

Keys written (all under `course:data_types:`):
- `race:get_set`, `race:incr`: strings, the two counters of `run_counter_race`;
- `memory:user:<field>` (strings) and `memory:user` (hash): `run_hash_vs_strings`;
- `cost:<n>:set|zset|list|scores` (set, sorted set, list, hash): `run_command_cost`, deleted at its end;
- the queue (list) given to `run_queue_simulation` or `run_queue_workers`, and the board (sorted set) given
  to `leaderboard_widget`.

Widgets start in a fixed state (nbval compares their text form) and write to their output only
when the learner presses a button.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable

import pandas as pd

from course_lib.concurrency import run_together
from course_lib.data_types import add_points, increment, increment_unsafely, place, top
from course_lib.keys import key
from course_lib.measure import latencies, summary_ms

CHAPTER = "data_types"


# -- counters under concurrency ------------------------------------------------------------------

def _hammer(client, name: str, operation: Callable, threads: int, increments: int) -> None:
    """Run `operation(client, name)` `increments` times in each of `threads` threads, released together."""

    def work(_slot: int) -> None:
        for _ in range(increments):
            operation(client, name)

    run_together(work, threads, timeout=120, what=f"counter race on {name}")


def run_counter_race(client, threads: int = 4, increments: int = 500) -> pd.DataFrame:
    """Count with GET+SET and with INCR from `threads` threads at once; how many updates survive.

    Returns one row per method: method, expected, counted, lost.
    """
    rows = []
    for method, operation, part in (("GET + SET", increment_unsafely, "get_set"), ("INCR", increment, "incr")):
        name = key(CHAPTER, "race", part)
        client.delete(name)
        _hammer(client, name, operation, threads, increments)
        counted = int(client.get(name) or 0)
        expected = threads * increments
        rows.append({"method": method, "expected": expected, "counted": counted, "lost": expected - counted})
    return pd.DataFrame(rows)


# -- memory: one hash vs many strings ------------------------------------------------------------

def run_hash_vs_strings(client, fields: int = 100) -> pd.DataFrame:
    """Store one object's `fields` attributes as one hash, then as one string key per attribute.

    Commands: HSET, MSET, MEMORY USAGE (SAMPLES 0: count every element). Returns one row per
    layout: layout, keys, memory_bytes, bytes_per_field. Byte counts differ between server versions;
    the comparison between the layouts is what holds.
    """
    values = {f"field{i}": f"value-{i}" for i in range(fields)}
    hash_key = key(CHAPTER, "memory", "user")
    string_keys = {key(CHAPTER, "memory", "user", field): value for field, value in values.items()}
    client.delete(hash_key, *string_keys)
    client.hset(hash_key, mapping=values)
    client.mset(string_keys)
    layouts = {
        "one hash": client.memory_usage(hash_key, samples=0),
        f"{fields} string keys": sum(client.memory_usage(name, samples=0) for name in string_keys),
    }
    return pd.DataFrame([
        {"layout": layout, "keys": 1 if layout == "one hash" else fields,
         "memory_bytes": size, "bytes_per_field": round(size / fields, 1)}
        for layout, size in layouts.items()
    ])


# -- the cost of a command as N grows -------------------------------------------------------------

COST_OPERATIONS = {
    "SISMEMBER": "O(1)",
    "ZRANK": "O(log N)",
    "LPOS": "O(N)",
    "HGETALL + sort": "O(N log N)",
}


MIN_P95_SAMPLES = 100  # fewer samples than this give no p95 in run_command_cost's table


def _cost_keys(n: int) -> dict[str, str]:
    return {kind: key(CHAPTER, "cost", n, kind) for kind in ("set", "zset", "list", "scores")}


def _populate(client, n: int, chunk: int = 5_000) -> None:
    """The same N members as a set, a sorted set, a list and a hash of scores, in batched pipelines."""
    names = _cost_keys(n)
    client.delete(*names.values())
    for start in range(0, n, chunk):
        members = {f"member:{i}": i for i in range(start, min(n, start + chunk))}
        with client.pipeline(transaction=False) as pipe:
            pipe.sadd(names["set"], *members)
            pipe.zadd(names["zset"], members)
            pipe.rpush(names["list"], *members)
            pipe.hset(names["scores"], mapping=members)
            pipe.execute()


def _operations(client, n: int) -> dict[str, Callable[[], object]]:
    names = _cost_keys(n)
    middle = f"member:{n // 2}"

    def rank_client_side() -> int:
        scores = client.hgetall(names["scores"])
        return sorted(scores, key=lambda member: float(scores[member]), reverse=True).index(middle)

    return {
        "SISMEMBER": lambda: client.sismember(names["set"], middle),
        "ZRANK": lambda: client.zrank(names["zset"], middle),
        "LPOS": lambda: client.lpos(names["list"], "not-there"),  # scans the whole list
        "HGETALL + sort": rank_client_side,
    }


def run_command_cost(client, sizes: tuple[int, ...] = (100, 1_000, 10_000, 100_000), samples: int = 150,
                     slow_samples: int = 10, progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Time each operation in `COST_OPERATIONS` on collections of each size in `sizes`.

    Every round times every (operation, size) once, interleaved in a shuffled order, so a burst of
    load on a shared machine hits all of them alike. Calls that took over 5 ms in both of two
    warm-up calls are timed in the first `slow_samples` rounds only (they cost seconds, and their
    growth is huge); all others in all `samples` rounds. `progress(done, total)` is called after each round.
    The collections are deleted at the end.

    Returns rows: operation, complexity, n, samples, median_ms, p95_ms. The p95 is NaN for a cell
    timed fewer than `MIN_P95_SAMPLES` times: from a handful of samples it would only be the maximum.
    """
    try:
        for n in sizes:
            _populate(client, n)
        operations = {(op, n): call for n in sizes for op, call in _operations(client, n).items()}
        # two warm-up calls (unmeasured in the table) tell the slow calls from the quick ones: a quick
        # call slowed by a moment of load on the machine is rarely slowed twice
        rounds = {cell: slow_samples if min(latencies(call, samples=2, warmup=0)) > 0.005 else samples
                  for cell, call in operations.items()}
        timings: dict[tuple[str, int], list[float]] = {cell: [] for cell in operations}
        order = list(operations)
        shuffle = random.Random(1).shuffle  # seeded: the same order on every run
        for done in range(1, samples + 1):
            shuffle(order)  # a slow call disturbs whatever runs next: spread that over every cell
            for cell in order:
                if done <= rounds[cell]:
                    timings[cell] += latencies(operations[cell], samples=1, warmup=0)
            if progress is not None:
                progress(done, samples)
    finally:
        for n in sizes:
            client.unlink(*_cost_keys(n).values())
    return pd.DataFrame([
        {"operation": op, "complexity": COST_OPERATIONS[op], "n": n, "samples": len(values),
         **_median_and_p95(values)}
        for (op, n), values in timings.items()
    ])


def growth(cost: pd.DataFrame) -> pd.Series:
    """For each operation: median time at the largest N divided by median time at the smallest N."""
    def ratio(rows: pd.DataFrame) -> float:
        rows = rows.sort_values("n")
        return float(rows["median_ms"].iloc[-1] / rows["median_ms"].iloc[0])

    return pd.Series({op: ratio(cost[cost["operation"] == op]) for op in cost["operation"].unique()}, name="growth")


def _median_and_p95(values: list[float]) -> dict[str, float]:
    summary = summary_ms(values)
    return {"median_ms": summary["median_ms"],
            "p95_ms": summary["p95_ms"] if len(values) >= MIN_P95_SAMPLES else float("nan")}


def command_cost_verdicts(cost: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_command_cost` tests, each with whether it held: {claim: bool}.

    "Stays flat" alone cannot fail when every call is dominated by the round trip, so each flat
    claim holds only if, in the same run, LPOS (O(N)) grew: the measurement could see growth.
    """
    ratio = growth(cost)
    small, large = f"{cost['n'].min():,}", f"{cost['n'].max():,}"
    lpos_grew = ratio["LPOS"] >= 3
    return {
        f"SISMEMBER, O(1), stays flat (N={large} within 3x of N={small}) while LPOS, O(N), grows at least 3x":
            1 / 3 < ratio["SISMEMBER"] < 3 and lpos_grew,
        f"ZRANK, O(log N), stays flat (N={large} within 3x of N={small}) while LPOS, O(N), grows at least 3x":
            1 / 3 < ratio["ZRANK"] < 3 and lpos_grew,
        f"HGETALL + sort grows: at least 50x slower at N={large} than at N={small}": ratio["HGETALL + sort"] >= 50,
    }


def plot_command_cost(cost: pd.DataFrame):
    """A log-log plot of median time against N, one line per operation; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for op in cost["operation"].unique():
        rows = cost[cost["operation"] == op].sort_values("n")
        ax.plot(rows["n"], rows["median_ms"], marker="o", label=f"{op}  {COST_OPERATIONS.get(op, '')}")
    ax.set(xscale="log", yscale="log", xlabel="N (elements in the collection)", ylabel="median time per call (ms)",
           title="Command time as the collection grows")
    ax.legend()
    plt.close(fig)  # shown by display(fig), not twice by the inline backend
    return fig


def command_cost_widget(client):
    """Pick the largest N and the number of rounds, press Run: a progress bar, then the table and plot."""
    import ipywidgets as widgets
    from IPython.display import display

    largest = widgets.SelectionSlider(options=[1_000, 10_000, 100_000], value=10_000, description="largest N")
    rounds = widgets.IntSlider(value=50, min=10, max=300, step=10, description="rounds")
    run = widgets.Button(description="Run", button_style="primary")
    bar = widgets.IntProgress(value=0, min=0, max=1, description="progress")
    status = widgets.Label(value="Choose the largest N and press Run.")
    output = widgets.Output()

    def on_run(_) -> None:
        sizes = tuple(n for n in (100, 1_000, 10_000, 100_000) if n <= largest.value)
        bar.max, bar.value = rounds.value, 0
        status.value = f"Timing {len(COST_OPERATIONS)} operations at N = {', '.join(map(str, sizes))}..."
        run.disabled = True
        try:
            cost = run_command_cost(client, sizes=sizes, samples=rounds.value,
                                    progress=lambda done, total: setattr(bar, "value", done))
        finally:
            run.disabled = False
        ratios = growth(cost)
        status.value = "Slowdown from smallest to largest N: " + ", ".join(f"{op} {ratios[op]:.1f}x" for op in ratios.index)
        output.clear_output(wait=True)
        with output:
            display(cost.pivot(index="n", columns="operation", values="median_ms").round(3))
            display(plot_command_cost(cost))

    run.on_click(on_run)
    return widgets.VBox([widgets.HBox([largest, rounds, run]), bar, status, output])


# -- a queue: producer rate vs consumer rate -----------------------------------------------------

def run_queue_simulation(client, queue: str, producer_rate: int, consumer_rate: int, seconds: int,
                         produce_for: int | None = None) -> pd.DataFrame:
    """Simulate a job queue second by second on a real Redis list, with a simulated clock.

    Each simulated second the producer LPUSHes `producer_rate` jobs (only during the first
    `produce_for` seconds, if given) and the consumer RPOPs up to `consumer_rate` of the oldest,
    then LLEN reads the backlog: one pipelined round trip per second, no sleeping. The queue is
    emptied first and left as the simulation ends it.

    Returns rows: second, produced, consumed, queue_length, wait_s (how long a job pushed now waits
    for the consumer to reach it; infinite when nothing consumes).
    """
    if min(producer_rate, consumer_rate, seconds) < 0:
        raise ValueError("rates and seconds must not be negative")
    client.delete(queue)
    pushed = 0
    rows = []
    for second in range(1, seconds + 1):
        new = producer_rate if produce_for is None or second <= produce_for else 0
        with client.pipeline(transaction=False) as pipe:
            if new:
                pipe.lpush(queue, *(f"job:{pushed + i}" for i in range(new)))
            if consumer_rate:
                pipe.rpop(queue, consumer_rate)
            pipe.llen(queue)
            replies = pipe.execute()
        pushed += new
        consumed = len(replies[-2] or []) if consumer_rate else 0
        length = replies[-1]
        rows.append({"second": second, "produced": new, "consumed": consumed, "queue_length": length,
                     "wait_s": length / consumer_rate if consumer_rate else float("inf")})
    return pd.DataFrame(rows)


def run_queue_workers(client, queue: str, producer_rate: int = 100, workers: int = 1, work_ms: float = 12.5,
                      seconds: float = 2.0) -> pd.DataFrame:
    """In real time, with real threads: a producer against `workers` workers on a Redis list.

    The producer LPUSHes `producer_rate` jobs a second for `seconds` (keeping to its rate by the
    clock, so it catches up after a slow moment) and, every 0.1 s, reads LLEN before pushing what
    is due. Each worker takes the oldest job (BRPOP, waiting at most 0.1 s) and works `work_ms` on
    it (a sleep standing for the job's work), so the workers can do at most
    `workers * 1000 / work_ms` jobs a second. Workers stop when the producer does; what is left
    is the backlog. The queue is emptied first and left as the run ends it.

    Returns rows: t_s, queue_length (the producer's LLEN samples). `attrs` holds produced,
    processed and capacity_per_s.
    """
    client.delete(queue)
    done = threading.Event()
    samples: list[tuple[float, int]] = []
    processed = [0] * (workers + 1)  # per slot: no two threads write the same cell

    def producer() -> int:
        start, pushed, next_sample = time.monotonic(), 0, 0.0
        while (elapsed := time.monotonic() - start) < seconds:
            if elapsed >= next_sample:
                samples.append((round(next_sample, 1), client.llen(queue)))
                next_sample += 0.1
            due = int(elapsed * producer_rate)
            if due > pushed:
                client.lpush(queue, *(f"job:{i}" for i in range(pushed, due)))
                pushed = due
            time.sleep(0.002)  # pacing: the next job is due in 1 / producer_rate s
        done.set()
        return pushed

    def work(slot: int) -> int:
        if slot == 0:
            return producer()
        while not done.is_set():
            if client.brpop(queue, timeout=0.1) is not None:
                time.sleep(work_ms / 1000)  # the job's work
                processed[slot] += 1
        return 0

    produced = run_together(work, workers + 1, timeout=seconds + 30, what="queue workers")[0]
    table = pd.DataFrame(samples, columns=["t_s", "queue_length"])
    table.attrs.update(produced=produced, processed=sum(processed), capacity_per_s=workers * 1000 / work_ms)
    return table


def plot_queue(simulation: pd.DataFrame):
    """Queue length over simulated time; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(simulation["second"], simulation["queue_length"], drawstyle="steps-post")
    ax.set(xlabel="simulated second", ylabel="jobs waiting (LLEN)", title="Queue length over time")
    plt.close(fig)
    return fig


def queue_simulator_widget(client, queue: str):
    """Sliders for producer rate, consumer rate, duration and how long the producer runs; Run plots LLEN."""
    import ipywidgets as widgets
    from IPython.display import display

    producer = widgets.IntSlider(value=12, min=0, max=50, description="produce/s")
    consumer = widgets.IntSlider(value=10, min=0, max=50, description="consume/s")
    seconds = widgets.IntSlider(value=60, min=10, max=300, step=10, description="seconds")
    produce_for = widgets.IntSlider(value=60, min=0, max=300, step=10, description="produce for")
    run = widgets.Button(description="Run", button_style="primary")
    status = widgets.Label(value="Set the rates and press Run.")
    output = widgets.Output()

    def on_run(_) -> None:
        simulation = run_queue_simulation(client, queue, producer.value, consumer.value, seconds.value,
                                          produce_for=produce_for.value)
        status.value = (f"After {seconds.value} s: {simulation['queue_length'].iloc[-1]} jobs waiting, "
                        f"longest backlog {simulation['queue_length'].max()} jobs")
        output.clear_output(wait=True)
        with output:
            display(plot_queue(simulation))

    run.on_click(on_run)
    return widgets.VBox([widgets.HBox([producer, consumer]), widgets.HBox([seconds, produce_for, run]), status, output])


# -- a leaderboard playground --------------------------------------------------------------------

def leaderboard_widget(client, board: str, player: str = "you", points: int = 100):
    """Type a player, pick points, press "Add points": ZINCRBY, then the top 10 is shown again."""
    import ipywidgets as widgets
    from IPython.display import display

    name = widgets.Text(value=player, description="player")
    amount = widgets.IntSlider(value=points, min=-500, max=1000, step=10, description="points")
    add = widgets.Button(description="Add points", button_style="primary")
    status = widgets.Label(value="Add points to a player and watch the top 10.")
    table = widgets.Output()

    def on_add(_) -> None:
        member = name.value.strip()
        if not member:
            status.value = "Type a player name first."
            return
        score = add_points(client, board, member, amount.value)
        status.value = f"{member}: {score:g} points, place {place(client, board, member)}"
        table.clear_output(wait=True)
        leaders = pd.DataFrame(top(client, board, 10), columns=["player", "score"])
        leaders.index = pd.RangeIndex(1, len(leaders) + 1, name="place")
        with table:
            display(leaders)

    add.on_click(on_add)
    return widgets.VBox([widgets.HBox([name, amount, add]), status, table])
