"""Chapter 01's experiments: each `run_*` returns a DataFrame; each `*_widget` wraps a run for the learner.

Keys written (all under `course:data_types:`):
- `race:get_set`, `race:incr`: strings, the two counters of `run_counter_race`;
- `memory:user:<field>` (strings) and `memory:user` (hash): `run_hash_vs_strings`;
- `cost:<n>:set|zset|list|scores` (set, sorted set, list, hash): `run_command_cost`, deleted at its end;
- the queue (list) given to `run_queue_simulation` or `run_queue_workers`, and the board (sorted set) given
  to `leaderboard_widget`;
- `dau:bitmap` (string) and `dau:set` (set): `run_bitmap_vs_set`;
- `visitors:{week}:exact` (set), `visitors:{week}:day:<n>` and `visitors:{week}:hll` (HyperLogLogs):
  `run_unique_visitors`;
- on a private scratch server only: `expiry:<n>` (strings with a TTL, `run_lazy_and_active_expiry`) and
  `big:set`, `big:set:copy` (sets, `run_delete_latency`).

Widgets start in a fixed state (nbval compares their text form) and write to their output only
when the learner presses a button.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Callable

import pandas as pd

from course_lib.concurrency import TimedOut, run_together, wait_for
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


# -- expiry: lazy on read, active in the background -----------------------------------------------

def run_lazy_and_active_expiry(client, keys: int = 100, ttl_ms: int = 20, hold_s: float = 0.5,
                               active_cycle: bool = False) -> pd.DataFrame:
    """Watch expired keys stay in the keyspace until a read or the active expiry cycle removes them.

    `client` must be a private scratch server's (`course_lib.servers.scratch_server`): with
    `active_cycle=False` the run switches the server's active expiry off (DEBUG SET-ACTIVE-EXPIRE 0)
    and always switches it back on before returning. Steps: SET `keys` keys with PX `ttl_ms`; wait
    (bounded) until the server's clock (TIME) is past their expiry, without touching them; wait up to `hold_s` for
    DBSIZE to drop, which only the active cycle can do while nobody reads; GET one key (lazy expiry
    deletes it on the spot); switch the cycle on and wait up to 5 s for DBSIZE to reach 0.

    Returns rows: step, dbsize, expires (INFO keyspace's count of keys with a TTL); `attrs["read"]`
    holds what the GET of an expired key returned.
    """
    names = [key(CHAPTER, "expiry", i) for i in range(keys)]
    rows = []

    def record(step: str) -> None:
        db = client.info("keyspace").get("db0", {})
        rows.append({"step": step, "dbsize": client.dbsize(), "expires": db.get("expires", 0)})

    def server_ms() -> int:
        seconds, micros = client.time()
        return seconds * 1000 + micros // 1000

    try:
        if not active_cycle:
            client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 0)
        with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.set(name, "v", px=ttl_ms)
            pipe.time()  # no key expires later than this moment + ttl_ms (asking each key would read it)
            *_, (seconds, micros) = pipe.execute()
        record(f"{keys} keys set with a {ttl_ms} ms TTL")
        deadline = seconds * 1000 + micros // 1000 + ttl_ms
        wait_for(lambda: server_ms() > deadline, 5, "the keys' TTL to pass")
        with contextlib.suppress(TimedOut):  # the wait ending without a change is the finding
            wait_for(lambda: client.dbsize() < keys, hold_s, "DBSIZE to drop")
        record(f"TTL passed, {hold_s} s later, nobody read them")
        read = client.get(names[0])
        record("after one GET of an expired key")
    finally:
        client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 1)
    wait_for(lambda: client.dbsize() == 0, 5, "the active expiry cycle to remove the expired keys")
    record("active expiry on again")
    table = pd.DataFrame(rows)
    table.attrs["read"] = read
    return table


def expiry_verdicts(table: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_lazy_and_active_expiry` tests: {claim: bool}."""
    keys, unread, after_read, final = table["dbsize"]
    return {
        "expired keys nobody read are still counted by DBSIZE (and INFO keyspace) without the active cycle":
            bool(unread == keys and table["expires"].iloc[1] == keys),
        "a GET of an expired key returns nothing and deletes it (lazy expiry)":
            bool(table.attrs["read"] is None and after_read == unread - 1),
        "the active expiry cycle removes the unread ones in the background": bool(final == 0),
    }


# -- DEL vs UNLINK of a large key ----------------------------------------------------------------

def _build_big_set(client, name: str, members: int, chunk: int = 10_000) -> None:
    """A set of the integers 0..members-1 at `name`, grown by SADDs of `chunk` members (a hashtable, not an intset)."""
    client.delete(name)
    for start in range(0, members, chunk):
        client.sadd(name, *range(start, min(members, start + chunk)))


def _delete_while_pinging(client, command: str, target: str, around: int) -> dict:
    """One trial of `run_delete_latency`: `command` on `target` while another connection PINGs."""
    pings: list[tuple[float, float]] = []  # (sent, answered), perf_counter seconds
    stop = threading.Event()

    def pinger() -> None:
        while not stop.is_set():
            sent = time.perf_counter()
            client.ping()  # the pool gives this thread its own connection
            pings.append((sent, time.perf_counter()))

    thread = threading.Thread(target=pinger, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(pings) >= around, 10, "the other connection's first PINGs")
        start = time.perf_counter()
        client.execute_command(command, target)
        end = time.perf_counter()
        seen = len(pings)
        wait_for(lambda: len(pings) >= seen + around, 10, "the other connection's next PINGs")
    finally:
        stop.set()
        thread.join(timeout=10)
    during = [answered - sent for sent, answered in pings if sent < end and answered > start]
    return {"command": command, "command_ms": (end - start) * 1000, "pings_during": len(during),
            "worst_ping_ms": max(during) * 1000}


def run_delete_latency(client, members: int = 1_000_000, around: int = 20) -> pd.DataFrame:
    """Delete a set of `members` members with DEL, and another with UNLINK, while another connection PINGs.

    `client` must be a private scratch server's: the run fills it with a big set, twice. During each
    deletion a thread sends PING after PING on its own connection, from `around` PINGs before it to
    `around` PINGs after it; the PINGs that overlap the deleting call are the ones it could hold up.
    DEL frees every member before it replies, and the server answers nobody meanwhile; UNLINK only
    unlinks the key and leaves the freeing to a background thread (the run waits for it, INFO memory
    lazyfree_pending_objects 0, before the next step). Whether DEL does the same is the server's
    `lazyfree-lazy-user-del` setting (no on Redis 7, yes on Valkey >= 8): the notebook's scratch
    server sets it to no. Each set is built afresh: a set made by COPY is laid out in memory in one
    sweep and frees several times faster than one grown by SADD, as real keys are.

    Returns rows: command, command_ms (the deleting call, seen by its client), pings_during (PINGs
    overlapping it), worst_ping_ms (the slowest of them).
    """
    name = key(CHAPTER, "big", "set")
    rows = []
    for command in ("DEL", "UNLINK"):
        _build_big_set(client, name, members)
        rows.append(_delete_while_pinging(client, command, name, around))
        wait_for(lambda: int(client.info("memory")["lazyfree_pending_objects"]) == 0, 10,
                 "the background freeing to finish")
    return pd.DataFrame(rows)


def delete_latency_verdict(table: pd.DataFrame, blocked_ms: float = 50, factor: float = 5) -> tuple[str, bool]:
    """The claim `run_delete_latency` tests, and whether it held: (claim, bool)."""
    worst = table.set_index("command")["worst_ping_ms"]
    claim = (f"DEL of the big set held another client's PING at least {blocked_ms:g} ms "
             f"and at least {factor:g}x longer than UNLINK did")
    return claim, bool(worst["DEL"] >= blocked_ms and worst["DEL"] >= factor * worst["UNLINK"])


# -- bitmaps: memory against a set ---------------------------------------------------------------

def run_bitmap_vs_set(client, users: int = 100_000, active_every: int = 3, first_id: int = 0) -> pd.DataFrame:
    """One day's active users, every `active_every`-th of `users` ids starting at `first_id`, as a bitmap and as a set.

    Commands: SETBIT and SADD (pipelined), BITCOUNT, SCARD, MEMORY USAGE (SAMPLES 0). Returns rows:
    layout, active, memory_bytes. The bitmap's size follows the largest id, not the number of
    users: ids starting at 10,000,000 cost 1.25 MB before the first active user.
    """
    ids = range(first_id, first_id + users, active_every)
    bitmap, members = key(CHAPTER, "dau", "bitmap"), key(CHAPTER, "dau", "set")
    client.delete(bitmap, members)
    with client.pipeline(transaction=False) as pipe:
        for user_id in ids:
            pipe.setbit(bitmap, user_id, 1)
        pipe.sadd(members, *ids)
        pipe.execute()
    return pd.DataFrame([
        {"layout": "bitmap (SETBIT)", "active": client.bitcount(bitmap),
         "memory_bytes": client.memory_usage(bitmap, samples=0)},
        {"layout": "set (SADD)", "active": client.scard(members),
         "memory_bytes": client.memory_usage(members, samples=0)},
    ])


def bitmap_verdict(table: pd.DataFrame, smaller: float = 10) -> tuple[str, bool]:
    """The claim `run_bitmap_vs_set` tests, and whether it held: (claim, bool)."""
    bitmap, members = table["memory_bytes"]
    return f"the bitmap at least {smaller:g}x smaller than a set of the same users", bool(members >= smaller * bitmap)


# -- HyperLogLog: unique visitors against an exact set -------------------------------------------

def run_unique_visitors(client, days: int = 7, daily: int = 20_000, pool: int = 60_000, seed: int = 1,
                        combine: str = "union") -> pd.DataFrame:
    """A week of visits counted exactly (a set) and approximately (one HyperLogLog per day).

    Each day `daily` visitors are drawn (seeded: the same every run) from `pool` ids, so many
    return on several days. Exact: SADD every visit to one set, SCARD. Estimate: PFADD each day's
    visits to that day's counter, then the week's unique visitors as PFCOUNT of all the days
    (`combine="union"`, right) or as the sum of each day's PFCOUNT (`combine="sum"`, the mistake
    that counts a returning visitor again); PFMERGE stores the week's counter. Memory: MEMORY
    USAGE (SAMPLES 0) of the set against the merged counter.

    Returns rows: method, unique, memory_bytes; `attrs["error"]` is abs(estimate - exact) / exact.
    """
    if combine not in ("union", "sum"):
        raise ValueError(f"combine must be 'union' or 'sum', got {combine!r}")
    rng = random.Random(seed)
    exact = key(CHAPTER, "visitors", "{week}", "exact")
    day_keys = [key(CHAPTER, "visitors", "{week}", "day", day) for day in range(days)]
    week = key(CHAPTER, "visitors", "{week}", "hll")
    client.delete(exact, week, *day_keys)
    for day_key in day_keys:
        visitors = [f"visitor:{rng.randrange(pool)}" for _ in range(daily)]
        with client.pipeline(transaction=False) as pipe:
            for start in range(0, daily, 5_000):
                pipe.sadd(exact, *visitors[start:start + 5_000])
                pipe.pfadd(day_key, *visitors[start:start + 5_000])
            pipe.execute()
    truth = client.scard(exact)
    estimate = (client.pfcount(*day_keys) if combine == "union"
                else sum(client.pfcount(day_key) for day_key in day_keys))
    client.pfmerge(week, *day_keys)
    table = pd.DataFrame([
        {"method": "exact set (SADD, SCARD)", "unique": truth, "memory_bytes": client.memory_usage(exact, samples=0)},
        {"method": f"HyperLogLog (PFADD, PFCOUNT {combine})", "unique": estimate,
         "memory_bytes": client.memory_usage(week, samples=0)},
    ])
    table.attrs["error"] = abs(estimate - truth) / truth
    return table


def unique_visitor_verdicts(table: pd.DataFrame, max_error: float = 0.02, smaller: float = 100) -> dict[str, bool]:
    """The claims `run_unique_visitors` tests: {claim: bool}."""
    memory = table["memory_bytes"]
    return {
        f"HyperLogLog's count of the week's unique visitors within {max_error:.0%} of the exact count":
            bool(table.attrs["error"] < max_error),
        f"the week's HyperLogLog at least {smaller:g}x smaller than the exact set":
            bool(memory.iloc[0] >= smaller * memory.iloc[1]),
    }
