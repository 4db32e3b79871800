"""Chapter 04's experiments: each `run_*` returns a DataFrame; `simulator_widget` wraps `run_simulation`.

Keys written (all under `course:streams:`, each run deletes what it wrote before starting and after):
- `{batch}:events`: stream with group `batch`: `run_batch_reads` (`batching_speedup` reads its table);
- `{sim}:events`, `{sim}:events:dead`: streams (group `workers`): `run_simulation`;
- `{restart}:orders`: stream (group `mailer`): `run_restart`;
- `{mail}:orders`, `{mail}:orders:dead`: streams (group `mailer`), `{mail}:sent:<id>`: strings: `run_email_crashes`.
"""

from __future__ import annotations

import random
import time

import pandas as pd

from course_lib.keys import delete_prefix, key
from course_lib.pipelines import RoundTripCounter
from course_lib.exercises.adversary import Adversary, SimulatedCrash
from course_lib.streams import (Recovery, ensure_group, entries, idempotent, process_new, process_own_pending,
                                recover)

CHAPTER = "streams"


def _forget(client, tag: str) -> None:
    delete_prefix(client, key(CHAPTER, "{" + tag + "}") + ":")


def run_batch_reads(client, messages: int = 2000, counts: tuple[int, ...] = (1, 100), rounds: int = 3) -> pd.DataFrame:
    """Drain `messages` entries through a consumer group with `process_new`, COUNT n at a time, for each n.

    What is measured is the taught pattern itself: each call is one XREADGROUP and one XACK of the
    batch's handled ids, so COUNT 1 costs two round trips per entry and COUNT 100 two per hundred.
    The round trips are counted on the client (`RoundTripCounter`), not computed. The sizes take
    turns `rounds` times; the best (least disturbed) run of each is kept.

    Returns rows: count, messages, round_trips, seconds, us_per_message.
    """
    stream, group = key(CHAPTER, "{batch}", "events"), "batch"
    best: dict[int, float] = {}
    trips: dict[int, int] = {}
    counter = RoundTripCounter(client)
    try:
        for _ in range(rounds):
            for count in counts:
                _forget(client, "batch")
                with client.pipeline(transaction=False) as pipe:
                    for n in range(messages):
                        pipe.xadd(stream, {"n": n})
                    pipe.execute()
                ensure_group(client, stream, group)
                handled = 0
                counter.reset()
                start = time.perf_counter()
                while done := process_new(counter.client, stream, group, "reader", lambda entry_id, fields: None,
                                          count=count, block_ms=None):
                    handled += done
                elapsed = time.perf_counter() - start
                if handled != messages:
                    raise RuntimeError(f"drained {handled} of {messages} entries")
                best[count] = min(best.get(count, elapsed), elapsed)
                trips[count] = counter.round_trips
    finally:
        counter.close()
        _forget(client, "batch")
    return pd.DataFrame([{"count": count, "messages": messages, "round_trips": trips[count],
                          "seconds": round(best[count], 4),
                          "us_per_message": round(best[count] / messages * 1e6, 1)} for count in counts])


def batching_speedup(table: pd.DataFrame) -> float:
    """How many times faster per entry the largest COUNT of a `run_batch_reads` table is than COUNT 1."""
    per_message = table.set_index("count")["us_per_message"]
    return float(per_message[1] / per_message[per_message.index.max()])


class _Crash(Exception):
    """A simulated worker failure while handling one entry."""


def run_simulation(client, rate: int = 5, workers: int = 2, crash_probability: float = 0.1, ticks: int = 30,
                   batch: int = 5, max_deliveries: int = 3, poison_every: int = 25, seed: int = 4) -> pd.DataFrame:
    """A consumer group over simulated time: producers, workers that crash, recovery, dead letters.

    Every tick: `rate` events are appended (every `poison_every`-th one is poison: handling it always
    fails); each live worker reads up to `batch` new entries with `process_new`; with probability
    `crash_probability` (seeded RNG) a worker dies instead, leaving its batch pending and staying
    down for 2 ticks. Then one live worker runs `recover` (min idle 0: everything pending at that
    point belongs to a dead worker or a failed entry), moving an entry delivered more than
    `max_deliveries` times to the dead-letter stream. Single-threaded, so the result is the same on
    every run and engine.

    Returns one row per tick: tick, produced, processed, pending, dead_lettered, undelivered.
    """
    if not (0 <= crash_probability <= 1 and rate >= 0 and workers >= 1 and ticks >= 1 and batch >= 1):
        raise ValueError("need 0 <= crash_probability <= 1, rate >= 0, workers >= 1, ticks >= 1, batch >= 1")
    stream, dead, group = key(CHAPTER, "{sim}", "events"), key(CHAPTER, "{sim}", "events", "dead"), "workers"
    _forget(client, "sim")
    ensure_group(client, stream, group)
    rng = random.Random(seed)
    down_until = [0] * workers
    produced = processed = dead_lettered = 0

    def handle(entry_id: str, fields: dict[str, str]) -> None:
        if fields.get("poison") == "1":
            raise _Crash(entry_id)

    rows = []
    for tick in range(1, ticks + 1):
        for _ in range(rate):
            produced += 1
            client.xadd(stream, {"n": produced, "poison": int(produced % poison_every == 0)})
        for worker in range(workers):
            if down_until[worker] > tick:
                continue
            if rng.random() < crash_probability:
                client.xreadgroup(group, f"worker-{worker}", {stream: ">"}, count=batch)  # read, then died
                down_until[worker] = tick + 2
                continue
            processed += process_new(client, stream, group, f"worker-{worker}", handle, count=batch, block_ms=None)
        alive = [worker for worker in range(workers) if down_until[worker] <= tick]
        result = (recover(client, stream, group, f"worker-{alive[0]}", handle, dead, min_idle_ms=0,
                          max_deliveries=max_deliveries) if alive else Recovery())
        processed += result.processed
        dead_lettered += result.dead_lettered
        pending = client.xpending(stream, group)["pending"]
        rows.append({"tick": tick, "produced": produced, "processed": processed, "pending": pending,
                     "dead_lettered": dead_lettered,
                     "undelivered": produced - processed - pending - dead_lettered})
    _forget(client, "sim")
    return pd.DataFrame(rows)


def plot_simulation(result: pd.DataFrame, title: str):
    """A line chart of the simulation's counters over ticks; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.2))
    for column in ("processed", "pending", "dead_lettered", "undelivered"):
        axes.plot(result["tick"], result[column], label=column.replace("_", " "))
    axes.set(xlabel="tick", ylabel="entries", title=title)
    axes.legend(loc="upper left")
    plt.close(figure)
    return figure


def simulator_widget(client):
    """Choose the producers' rate, the workers and their crash probability, press Run: the group over time."""
    import ipywidgets as widgets
    from IPython.display import display

    rate = widgets.IntSlider(value=5, min=1, max=20, description="events/tick")
    workers = widgets.IntSlider(value=2, min=1, max=6, description="workers")
    crash = widgets.FloatSlider(value=0.1, min=0.0, max=0.6, step=0.05, description="crash prob.")
    run = widgets.Button(description="Run", button_style="primary")
    status = widgets.Label(value="Set the rate, the workers and their crash probability, then press Run (30 ticks).")
    output = widgets.Output()

    def on_run(_) -> None:
        result = run_simulation(client, rate.value, workers.value, crash.value)
        last = result.iloc[-1]
        status.value = (f"after {len(result)} ticks: {last.produced} produced, {last.processed} processed, "
                        f"{last.pending} pending, {last.dead_lettered} dead-lettered, {last.undelivered} not yet read")
        output.clear_output(wait=True)
        with output:
            display(plot_simulation(result, f"{rate.value} events/tick, {workers.value} workers, "
                                            f"crash probability {crash.value:.2f}"))

    run.on_click(on_run)
    return widgets.VBox([widgets.HBox([rate, workers]), widgets.HBox([crash, run]), status, output])


def run_restart(client, startup: bool = True) -> pd.DataFrame:
    """A mailer takes orders 1-5, handles and acknowledges 1 and 2, and dies; orders 6-8 arrive; it restarts.

    The restarted worker keeps its consumer name. With `startup` it first reads its own pending
    entries (`process_own_pending`: XREADGROUP ... 0 until empty), then new ones (`process_new`,
    `>`); without, it reads only `>`, and orders 3-5 stay pending for it although it is alive.

    Returns:
        One row: start, `orders handled` (in order), `pending left`.
    """
    stream, group, worker = key(CHAPTER, "{restart}", "orders"), "mailer", "mailer-1"
    _forget(client, "restart")
    try:
        ensure_group(client, stream, group)
        for order in range(1, 6):
            client.xadd(stream, {"order": order})
        taken = entries(client.xreadgroup(group, worker, {stream: ">"}, count=5))
        client.xack(stream, group, *[entry_id for entry_id, _ in taken[:2]])  # handled 1 and 2, then died
        for order in range(6, 9):
            client.xadd(stream, {"order": order})
        handled: list[int] = []

        def handle(entry_id, fields):
            handled.append(int(fields["order"]))

        if startup:
            process_own_pending(client, stream, group, worker, handle)
        while process_new(client, stream, group, worker, handle, block_ms=None):
            pass
        return pd.DataFrame([{"start": "0 until empty, then >" if startup else "> only", "orders handled": handled,
                              "pending left": client.xpending(stream, group)["pending"]}])
    finally:
        _forget(client, "restart")


def handled_pending_first(row) -> bool:
    """The verdict on a `run_restart` row: orders 3-5 (its own pending) before 6-8, and nothing left pending."""
    return row["orders handled"] == list(range(3, 9)) and row["pending left"] == 0


def run_email_crashes(client, use_marks: bool = True, max_deliveries: int = 2) -> pd.DataFrame:
    """Sending an order's e-mail from a consumer group, with the worker killed at every point in turn.

    The worker runs `process_new` once on a stream holding one order; its handler sends the e-mail
    (appends to a list: the mail server) either through `idempotent` (`use_marks`) or directly.
    A clean run counts the worker's round trips n; then for k = 1 .. n-1 the worker dies right
    after its k-th round trip (the adversary's `crash_after`): whatever its code does between
    round trips (sending the e-mail) has happened, nothing after has. Then a rescuer calls
    `recover` (min idle 0) until nothing is pending (at most `max_deliveries` + 1 calls).

    Returns:
        One row per crash point: `crash after` (round trip and its commands), `e-mails sent`,
        `dead-lettered`, `pending`; a last row for the run without a crash.
    """
    stream, group = key(CHAPTER, "{mail}", "orders"), "mailer"
    dead, marks = stream + ":dead", key(CHAPTER, "{mail}", "sent")
    sent: list[str] = []

    def send(fields):
        sent.append(fields["order"])

    def handler(c):
        return idempotent(c, marks, send) if use_marks else (lambda entry_id, fields: send(fields))

    def setup():
        _forget(client, "mail")
        sent.clear()
        ensure_group(client, stream, group)
        client.xadd(stream, {"order": "42", "to": "ann@example.com"})

    def work(c):
        process_new(c, stream, group, "mailer-1", handler(c), block_ms=None)

    def outcome(crash: str) -> dict:
        for _ in range(max_deliveries + 1):
            if not client.xpending(stream, group)["pending"]:
                break
            recover(client, stream, group, "mailer-2", handler(client), dead, min_idle_ms=0,
                    max_deliveries=max_deliveries)
        return {"crash after": crash, "e-mails sent": len(sent), "dead-lettered": client.xlen(dead),
                "pending": client.xpending(stream, group)["pending"]}

    try:
        setup()
        with Adversary(client) as clean:
            work(clean.client)
            sent_commands = clean.sent
        rows = [outcome("no crash")]
        for k in range(1, len(sent_commands)):
            setup()
            with Adversary(client, crash_after=k) as crashing:
                try:
                    work(crashing.client)
                except SimulatedCrash:
                    pass
            steps = ", ".join(f"SET {c[2]}" if c[0] == "SET" else c[0] for c in sent_commands[k - 1])  # which mark
            rows.insert(k - 1, outcome(f"round trip {k} ({steps})"))
        return pd.DataFrame(rows).set_index("crash after")
    finally:
        _forget(client, "mail")


def never_twice_never_lost(frame) -> bool:
    """The verdict on `run_email_crashes`: after every crash at most one e-mail left, each order was
    either e-mailed or dead-lettered for a human (never silently dropped), and nothing stays pending."""
    mailed, dead = frame["e-mails sent"], frame["dead-lettered"]
    return bool((mailed <= 1).all() and ((mailed == 1) | (dead == 1)).all() and (frame["pending"] == 0).all())
