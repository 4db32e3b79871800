"""Chapter 05's experiments: each `run_*` returns a DataFrame; `traffic_widget` wraps `run_traffic`.

Keys written (all under `course:rate_limiting:`, each run deletes what it wrote before starting):
- `{race-<contender>:round-<n>}:...` and `guide:sliding:race-<n>`: `run_race`'s limiters;
- `{speed:<contender>}:...`, `guide:...:speed`: `run_speed`;
- `{peers:client}:...` and `peers-<strategy>:LIMITER/...` (the `limits` library's keys): `run_peers`;
- `{gcra:...}:...`: `run_gcra`;
- `{traffic:client}:...`: `run_traffic`; `{worst:client}:...`: `run_worst_case`;
- `{oracle:...}:...` and `oracle:LIMITER/...` (the `limits` library's keys): `run_oracle`.

Time: every run except `run_speed` and `run_peers` passes a simulated `now` to the limiters, so its decisions are
the same on every run and every engine; only the race's interleaving is left to the threads.
"""

from __future__ import annotations

import contextlib
import random
import statistics
from bisect import bisect_right
from fractions import Fraction
from typing import Callable, Iterator

import pandas as pd

from course_lib.concurrency import run_together
from course_lib.keys import delete_prefix, key
from course_lib.measure import latencies, take_turns
from course_lib.rate_limiting import GCRA, STRATEGIES, TokenBucket, guide_fixed_window, guide_sliding_window

CHAPTER = "rate_limiting"
GUIDE_SLIDING = "guide sliding window"
RACE_NOW = 1_700_000_000.0  # every request of the race happens at this instant: only concurrency varies


def _forget(client, *starts: str) -> None:
    """Delete this chapter's keys that begin with each of `starts` (after `course:rate_limiting:`)."""
    for start in starts:
        delete_prefix(client, f"course:{CHAPTER}:{start}")


# -- the race: concurrent bursts against one limit -------------------------------------------------

def _burst(allow: Callable[[], bool], threads: int, per_thread: int) -> int:
    """Release `threads` threads at once, each calling `allow()` `per_thread` times; how many were allowed."""

    def send(_slot: int) -> int:
        return sum(bool(allow()) for _ in range(per_thread))

    return sum(run_together(send, threads, timeout=60, what="burst"))


def run_race(client, limit: int = 10, threads: int = 8, per_thread: int = 5, rounds: int = 20) -> pd.DataFrame:
    """`rounds` times, `threads` threads send `per_thread` requests each, all at once, against one limit.

    Every request carries the same `now`, so the window never moves: a correct limiter admits
    exactly `limit` per round; a racy one can admit more. Each round uses a fresh identity.

    Returns one row per contender: contender, round_trips (per allowed request), limit, rounds,
    max_admitted (in one round), rounds_over_limit.
    """
    _forget(client, "{race-", "guide:sliding:race-")
    # contender -> (round trips per allowed request, allow(identity) -> bool)
    contenders: dict[str, tuple[int, Callable[[str], bool]]] = {
        GUIDE_SLIDING: (4, lambda who: guide_sliding_window(client, who, limit, 60, now=RACE_NOW)["allowed"]),
    }
    for name, strategy in STRATEGIES.items():
        limiter = strategy(client, "race-" + name.replace(" ", "-"), limit, 60)
        contenders[name] = (1, lambda who, limiter=limiter: limiter.hit(who, now=RACE_NOW).allowed)
    rows = []
    for contender, (round_trips, allow) in contenders.items():
        admitted = [_burst(lambda: allow(f"race-{n}"), threads, per_thread) for n in range(rounds)]
        rows.append({"contender": contender, "round_trips": round_trips, "limit": limit, "rounds": rounds,
                     "max_admitted": max(admitted), "rounds_over_limit": sum(a > limit for a in admitted)})
    _forget(client, "{race-", "guide:sliding:race-")
    return pd.DataFrame(rows)


# -- speed: decisions per second --------------------------------------------------------------------

def run_speed(client, samples: int = 2000, rounds: int = 10) -> pd.DataFrame:
    """Decisions per second of each strategy, of the guide's two limiters, and of PING (the ceiling).

    All on the same client, with a limit so high every request is allowed (the guide's sliding
    window then always makes its four round trips), real clock. The contenders take turns, `rounds`
    times `samples / rounds` calls each, so a burst of load on a shared machine hits them all alike.

    Returns rows: contender, round_trips, median_us (of each contender's quickest turn, see
    `measure.take_turns`), decisions_per_s (one over it: the rate one caller reaches).
    """
    _forget(client, "{speed:", "guide:fixed:speed:", "guide:sliding:speed")
    huge = 10**9
    contenders: dict[str, tuple[int, Callable[[], object]]] = {"PING": (1, client.ping)}
    for name, strategy in STRATEGIES.items():
        limiter = strategy(client, "speed", huge, 60)
        contenders[name] = (1, lambda limiter=limiter: limiter.hit("client"))
    contenders["guide fixed window"] = (1, lambda: guide_fixed_window(client, "speed", huge, 60))
    contenders[GUIDE_SLIDING] = (4, lambda: guide_sliding_window(client, "speed", huge, 60))
    quickest = take_turns({contender: operation for contender, (_, operation) in contenders.items()}, rounds,
                          calls=max(1, samples // rounds), warmup=5)
    _forget(client, "{speed:", "guide:fixed:speed:", "guide:sliding:speed")
    rows = []
    for contender, (round_trips, _) in contenders.items():
        median = quickest[contender]
        rows.append({"contender": contender, "round_trips": round_trips,
                     "median_us": round(median * 1e6, 1), "decisions_per_s": round(1 / median)})
    return pd.DataFrame(rows)


def faster_by(speed: pd.DataFrame, ours: str, theirs: str, factor: float) -> bool:
    """The speed verdict over `run_speed`'s table: `ours` makes at least `factor` x the decisions per second of `theirs`.

    The notebook compares the Lua sliding log (one round trip) with the guide's sliding window
    (four); compared with a contender making as many round trips (the guide's fixed window), the
    same verdict is False, so it measures round trips, not a constant.
    """
    rate = speed.set_index("contender")["decisions_per_s"]
    return bool(rate[ours] >= factor * rate[theirs])


# -- against the peer a user would pick: the `limits` library, same strategy, same server ------------

PEERS = {
    # course strategy: the `limits` strategy class a user would pick instead (see `ORACLE_PAIRS`)
    "fixed window": "FixedWindowRateLimiter",
    "sliding log": "MovingWindowRateLimiter",
    "sliding window counter": "SlidingWindowCounterRateLimiter",
}
PEER_TOLERANCE = 0.05  # "at least as fast": the course's median may exceed `limits`' by this share (noise), no more


def run_peers(client, samples: int = 300, rounds: int = 7, extra_round_trip: tuple[str, ...] = ()) -> pd.DataFrame:
    """Each course strategy against `limits`' same strategy on the same server: time per decision.

    Real clock, a limit so high every request is allowed (the common case a limiter must make
    cheap), each side with its own keys. The two sides alternate call by call (who goes first
    alternates too), so load on a shared machine hits both alike; each round gives each side's
    median, and the ratio of the two. `limits` answers only allowed/denied (a bool); the course
    also returns remaining, retry_after and reset_after, in the same one round trip.

    Args:
        extra_round_trip: course strategies to slow down with a plausible regression: a PING
            before every decision (two round trips, e.g. reading a setting first). For the
            verdict's degraded-setting test.

    Returns one row per strategy: strategy, peer, course_us and limits_us (the lowest of the rounds'
    medians: the least disturbed round), ratio (course / limits: the median over rounds of each
    round's ratio of medians; below 1 the course is faster).
    """
    import limits
    import limits.storage
    import limits.strategies

    _forget(client, "{peers:", "peers-")
    huge = 10**9
    item = limits.RateLimitItemPerSecond(huge, 60)
    rows = []
    for strategy, peer in PEERS.items():
        course = STRATEGIES[strategy](client, "peers", huge, 60)
        storage = limits.storage.RedisStorage("redis://", connection_pool=client.connection_pool,
                                              key_prefix=key(CHAPTER, "peers-" + strategy.replace(" ", "-")))
        theirs = getattr(limits.strategies, peer)(storage)

        def ours(course=course, slow=strategy in extra_round_trip):
            if slow:
                client.ping()
            return course.hit("client")

        sides = (ours, lambda theirs=theirs: theirs.hit(item, "client"))
        for side in sides:
            latencies(side, 0, warmup=20)  # scripts loaded, connection warm
        best, ratios = [float("inf")] * 2, []
        for _ in range(rounds):
            times: list[list[float]] = [[], []]
            for n in range(samples):
                for which in (n % 2, 1 - n % 2):
                    times[which] += latencies(sides[which], 1, warmup=0)
            medians = [statistics.median(t) for t in times]
            best = [min(b, m) for b, m in zip(best, medians)]
            ratios.append(medians[0] / medians[1])
        rows.append({"strategy": strategy, "peer": f"limits {peer}", "course_us": round(best[0] * 1e6, 1),
                     "limits_us": round(best[1] * 1e6, 1), "ratio": round(statistics.median(ratios), 3)})
    _forget(client, "{peers:", "peers-")
    return pd.DataFrame(rows)


def as_fast_as_peers(peers: pd.DataFrame, tolerance: float = PEER_TOLERANCE) -> bool:
    """The verdict over `run_peers`' table: every course strategy takes at most (1 + tolerance) x `limits`' time."""
    return bool((peers["ratio"] <= 1 + tolerance).all())


# -- traffic patterns on a simulated clock ------------------------------------------------------------

PATTERNS = ("steady", "burst", "spiky")


def traffic(pattern: str, limit: int, window: float, duration: float, seed: int = 7) -> list[float]:
    """Request times (seconds from 0, sorted) of a traffic pattern; deterministic for a given seed.

    - steady: evenly spaced at 1.5 x the allowed rate;
    - burst: 2 x limit requests within one second, straddling the end of every second window;
    - spiky: half the allowed rate at random, plus a spike of a whole limit's worth of requests
      in 0.2 s at 3 random moments.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if limit <= 0 or window <= 0 or duration <= 0:
        raise ValueError("limit, window and duration must be positive")
    rng = random.Random(seed)
    if pattern == "steady":
        gap = window / (1.5 * limit)
        times = [i * gap for i in range(int(duration / gap))]
    elif pattern == "burst":
        boundaries = [window * n for n in range(1, int(duration / window) + 1, 2)]
        times = [b - 0.5 + i / (2 * limit) for b in boundaries for i in range(2 * limit)]
    else:
        times = [rng.uniform(0, duration) for _ in range(int(0.5 * limit * duration / window))]
        for spike in (rng.uniform(0, duration - 0.2) for _ in range(3)):
            times += [spike + rng.uniform(0, 0.2) for _ in range(limit)]
    return sorted(round(t, 3) for t in times if 0 <= t < duration)


def max_in_any_window(times: list[float], window: float) -> int:
    """The most times that fall inside any half-open span (t - window, t] of the given length.

    Counted in whole milliseconds, as the limiters do, so float rounding cannot widen a span.
    """
    ordered = sorted(round(t * 1000) for t in times)
    span = round(window * 1000)
    return max((i + 1 - bisect_right(ordered, t - span) for i, t in enumerate(ordered)), default=0)


def run_traffic(client, pattern: str, strategy: str, limit: int = 10, window: float = 10.0,
                duration: float = 60.0, start: float = 1_700_000_000.0) -> pd.DataFrame:
    """Replay a traffic pattern through one strategy on a simulated clock (real Redis, no waiting).

    Returns one row per request: t (seconds from the start), allowed.
    """
    limiter = STRATEGIES[strategy](client, "traffic", limit, window)
    limiter.reset("client")
    times = traffic(pattern, limit, window, duration)
    # `start` is a multiple of the window lengths offered, so window boundaries fall on round numbers
    rows = [{"t": t, "allowed": limiter.hit("client", now=start + t).allowed} for t in times]
    limiter.reset("client")
    return pd.DataFrame(rows, columns=["t", "allowed"])


def traffic_summary(client, patterns=PATTERNS, strategies=tuple(STRATEGIES), limit: int = 10,
                    window: float = 10.0, duration: float = 60.0) -> pd.DataFrame:
    """For each pattern x strategy: requests, allowed, and the most allowed within any one window length."""
    rows = []
    for pattern in patterns:
        for strategy in strategies:
            run = run_traffic(client, pattern, strategy, limit, window, duration)
            passed = run.loc[run["allowed"], "t"].tolist()
            rows.append({"pattern": pattern, "strategy": strategy, "requests": len(run), "allowed": len(passed),
                         "most_in_one_window": max_in_any_window(passed, window)})
    return pd.DataFrame(rows)


def run_worst_case(client, limit: int = 10, window: float = 10.0, windows: int = 4, adversarial: bool = True,
                   strategies=tuple(STRATEGIES), start: float = 1_700_000_000.0) -> pd.DataFrame:
    """The most requests each strategy admits within one window length, against a greedy client.

    The client asks again at once after every allowed request, and after a denial exactly when its
    `retry_after` says the next would pass, for `windows` windows (simulated clock). Adversarial,
    it begins 0.5 s before the first window boundary, so its first `limit` requests land at the
    very end of a window; otherwise it begins at a window's start. (Not closer to the boundary: the
    fixed window's counter gets a TTL of the simulated time left in its window, which passes in
    real time while the burst is sent.)

    Returns one row per strategy: strategy, limit, sent, admitted, most_in_one_window (any
    half-open span of one window length), times_limit (most_in_one_window / limit).
    """
    rows = []
    for strategy in strategies:
        limiter = STRATEGIES[strategy](client, "worst", limit, window)
        limiter.reset("client")
        t = window - 0.5 if adversarial else 0.0
        sent, admitted = 0, []
        while t < window * windows:
            decision = limiter.hit("client", now=start + t)
            sent += 1
            if decision.allowed:
                admitted.append(t)
            else:
                t = round(t + decision.retry_after, 3)
        limiter.reset("client")
        most = max_in_any_window(admitted, window)
        rows.append({"strategy": strategy, "limit": limit, "sent": sent, "admitted": len(admitted),
                     "most_in_one_window": most, "times_limit": round(most / limit, 2)})
    return pd.DataFrame(rows)


def plot_traffic(run: pd.DataFrame, title: str, window: float, bucket: float = 0.5):
    """Allowed and denied requests per `bucket` seconds, stacked, with window boundaries marked."""
    import matplotlib.pyplot as plt

    slots = (run["t"] // bucket) * bucket
    counts = run.assign(slot=slots).groupby(["slot", "allowed"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[True, False], fill_value=0)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(counts.index, counts[True], width=bucket, align="edge", color="tab:green", label="allowed")
    ax.bar(counts.index, counts[False], width=bucket, align="edge", bottom=counts[True], color="tab:red",
           label="denied (429)")
    for boundary in range(0, int(run["t"].max() + window) + 1, int(window) or 1):
        ax.axvline(boundary, color="grey", linewidth=0.5, linestyle=":")
    ax.set(xlabel="simulated seconds", ylabel=f"requests per {bucket:g} s", title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    plt.close(fig)  # shown by display(fig), not twice by the inline backend
    return fig


def traffic_widget(client):
    """Pick a traffic pattern, a strategy and a limit, press Run: allowed/denied over simulated time."""
    import ipywidgets as widgets
    from IPython.display import display

    pattern = widgets.Dropdown(options=PATTERNS, value="burst", description="traffic")
    strategy = widgets.Dropdown(options=list(STRATEGIES), value="fixed window", description="strategy")
    limit = widgets.IntSlider(value=10, min=1, max=50, description="limit / 10 s")
    run = widgets.Button(description="Run", button_style="primary")
    status = widgets.Label(value="Choose traffic, strategy and limit (per 10 s window), then press Run.")
    output = widgets.Output()

    def on_run(_) -> None:
        window = 10.0
        result = run_traffic(client, pattern.value, strategy.value, limit.value, window)
        passed = result.loc[result["allowed"], "t"].tolist()
        status.value = (f"{len(passed)} of {len(result)} allowed; most allowed within one 10 s span: "
                        f"{max_in_any_window(passed, window)} (limit {limit.value})")
        output.clear_output(wait=True)
        with output:
            display(plot_traffic(result, f"{pattern.value} traffic, {strategy.value}, limit {limit.value} per 10 s",
                                 window))

    run.on_click(on_run)
    return widgets.VBox([widgets.HBox([pattern, strategy]), widgets.HBox([limit, run]), status, output])


# -- the oracle: the `limits` library replays the same trace ------------------------------------------

class _FixedClock:
    """Stands in for the `time` module inside `limits`' storages: `time()` returns what we set."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now


@contextlib.contextmanager
def oracle_clock() -> Iterator[_FixedClock]:
    """Make `limits` read our simulated clock instead of the wall clock, for the duration of the block.

    `limits` calls `time.time()` itself (no timestamp parameter), in `limits.storage.redis` and
    `limits.storage.memory`; we replace the `time` those two modules see. Redis itself is untouched.
    """
    import limits.storage.memory
    import limits.storage.redis

    clock = _FixedClock()
    modules = (limits.storage.memory, limits.storage.redis)
    saved = [module.time for module in modules]
    for module in modules:
        module.time = clock
    try:
        yield clock
    finally:
        for module, original in zip(modules, saved):
            module.time = original


ORACLE_PAIRS = {
    # course strategy: (limits strategy class name, storage), see `oracle_limiter`
    "sliding log": ("MovingWindowRateLimiter", "redis"),
    "fixed window": ("FixedWindowRateLimiter", "memory"),
    "sliding window counter": ("SlidingWindowCounterRateLimiter", "memory"),
}


def oracle_limiter(client, strategy: str, limit: int, window: int) -> Callable[[float, int], bool]:
    """The `limits` library's version of a course strategy, as `decide(now, cost) -> allowed`.

    The sliding log is compared with `limits`' moving window on the same Redis server (its Lua
    script receives the client's time, which the oracle clock fixes). `limits`' Redis fixed window
    and sliding-window counter take their time from Redis TTLs, i.e. the server's clock, which no
    test can fix without changing the server; for those two the oracle is `limits`' in-memory
    storage, which runs the same strategy classes on the client's (fixed) clock.
    """
    import limits
    import limits.storage
    import limits.strategies

    name, storage_kind = ORACLE_PAIRS[strategy]
    if storage_kind == "redis":
        storage = limits.storage.RedisStorage("redis://", connection_pool=client.connection_pool,
                                              key_prefix=key(CHAPTER, "oracle"))
    else:
        storage = limits.storage.MemoryStorage()
    limiter = getattr(limits.strategies, name)(storage)
    item = limits.RateLimitItemPerSecond(limit, window)
    return lambda now, cost: bool(limiter.hit(item, "client", cost=cost))


def oracle_trace(strategy: str, window: int, requests: int = 300, seed: int = 11) -> list[tuple[float, int]]:
    """A request trace (time in seconds from 0, cost) that avoids the documented differences.

    Times are multiples of 0.375 s: no two are exactly `window` (an integer) apart, the one age at
    which the course's sliding log has forgotten an entry and `limits`' moving window still counts
    it. Use a power-of-two window (8 s): `limits` computes the sliding-window weight in floating
    point from `now / window`, which is exact then; with 10 s it is not (0.8 has no binary form)
    and a weight that should be an integer can round down, allowing one more request.
    For the fixed window every window's first request falls on the window's start, where `limits`
    (which opens a window at its first request) and the course (clock-aligned windows) agree;
    costs are then 1, since `limits`' fixed window also counts denied requests.
    """
    rng = random.Random(seed)
    if strategy == "fixed window":
        trace: list[tuple[float, int]] = []
        number = 0
        while len(trace) < requests:
            number += rng.choice((1, 1, 2))
            later = {rng.randrange(1, int(window / 0.375)) * 0.375 for _ in range(rng.randrange(1, 9))}
            trace += [(number * window + offset, 1) for offset in sorted({0.0, *later})]
        return trace[:requests]
    t = 0.0
    trace = []
    for _ in range(requests):
        t += rng.choice((0.375, 0.375, 0.75, 1.125, 3.0))
        trace.append((t, rng.choice((1, 1, 1, 2, 3))))
    return trace


def replay(decide: Callable[[float, int], bool], trace: list[tuple[float, int]], start: float,
           clock: _FixedClock | None = None) -> list[bool]:
    """The allow/deny decisions of `decide(now, cost)` for each request of `trace`, at `start + t`."""
    decisions = []
    for t, cost in trace:
        if clock is not None:
            clock.now = start + t
        decisions.append(decide(start + t, cost))
    return decisions


def run_oracle(client, limit: int = 5, window: int = 8, requests: int = 300,
               start: float = 1_700_000_000.0) -> pd.DataFrame:
    """Replay the same traces through the course's limiters and `limits`; count identical decisions.

    Returns one row per shared strategy: strategy, oracle, requests, allowed, same_decisions.
    """
    _forget(client, "{oracle:", "oracle:")
    rows = []
    with oracle_clock() as clock:
        for strategy, (oracle_name, storage) in ORACLE_PAIRS.items():
            trace = oracle_trace(strategy, window, requests)
            course = STRATEGIES[strategy](client, "oracle", limit, window)
            ours = replay(lambda now, cost: course.hit("client", cost, now=now).allowed, trace, start)
            theirs = replay(oracle_limiter(client, strategy, limit, window), trace, start, clock)
            rows.append({"strategy": strategy, "oracle": f"limits {oracle_name} ({storage})", "requests": len(trace),
                         "allowed": sum(ours), "same_decisions": sum(a == b for a, b in zip(ours, theirs))})
    _forget(client, "{oracle:", "oracle:")
    return pd.DataFrame(rows)


# -- GCRA: against a pure-Python model (`limits` has no GCRA) and against the token bucket -------------

def gcra_model(limit: int, window: float) -> Callable[[float, int], bool]:
    """GCRA as the ATM standard states it (virtual scheduling), in exact fractions: `decide(now, cost)`.

    Cells are due one emission interval T = window / limit apart; a cell may arrive up to the burst
    tolerance tau = window - T before its theoretical arrival time (TAT). A request of `cost` units
    is `cost` cells arriving together: allowed if its last cell is not too early, and then the TAT
    moves on by cost x T. Times are rounded to the millisecond, as the limiters do.
    """
    interval = Fraction(round(window * 1000), 1000) / limit
    tolerance = Fraction(round(window * 1000), 1000) - interval
    tat: Fraction | None = None

    def decide(now: float, cost: int) -> bool:
        nonlocal tat
        arrival = Fraction(round(now * 1000), 1000)
        due = arrival if tat is None else max(tat, arrival)
        if due + (cost - 1) * interval - arrival > tolerance:
            return False
        tat = due + cost * interval
        return True

    return decide


def gcra_traces(window: float, requests: int = 300) -> dict[str, list[tuple[float, int]]]:
    """The traces `run_gcra` replays: random gaps and costs (1-3), and the three traffic patterns (cost 1)."""
    traces = {"random, costs 1-3": oracle_trace("sliding log", int(window), requests)}
    for pattern in PATTERNS:
        traces[pattern] = [(t, 1) for t in traffic(pattern, 10, window, 60.0)]
    return traces


def run_gcra(client, limit: int = 7, window: float = 10.0, requests: int = 300, skew: float = 0.0,
             model_limit: int | None = None, start: float = 1_700_000_000.0) -> pd.DataFrame:
    """Replay traces through the course's GCRA, a pure-Python GCRA and the token bucket; compare.

    The default limit of 7 per 10 s makes the emission interval 10/7 s, not a whole number of ms,
    so the script's exact arithmetic (parts of a ms) is exercised.

    Args:
        skew: up to this many seconds are taken off each request's time at random (an app server
            whose clock runs slow), so time sometimes goes backwards: the degraded setting in which
            GCRA and the token bucket part ways (see `GCRA`).
        model_limit: the model's limit (default: `limit`); another value is the degraded setting
            that shows the model comparison can fail.

    Returns one row per trace: trace, requests, allowed (by the course's GCRA), same_as_model
    (allow/deny decisions equal to the model's), same_as_token_bucket (whole `Decision` tuples equal:
    allowed, remaining, retry_after and reset_after).
    """
    _forget(client, "{gcra:")
    rng = random.Random(13)
    rows = []
    for name, trace in gcra_traces(window, requests).items():
        if skew:
            trace = [(max(0.0, round(t - rng.uniform(0, skew), 3)), cost) for t, cost in trace]
        gcra, bucket = GCRA(client, "gcra", limit, window), TokenBucket(client, "gcra", limit, window)
        gcra.reset("client")
        bucket.reset("client")
        ours = [gcra.hit("client", cost, now=start + t) for t, cost in trace]
        buckets = [bucket.hit("client", cost, now=start + t) for t, cost in trace]
        model = replay(gcra_model(model_limit or limit, window), trace, start)
        rows.append({"trace": name, "requests": len(trace), "allowed": sum(d.allowed for d in ours),
                     "same_as_model": sum(d.allowed == m for d, m in zip(ours, model)),
                     "same_as_token_bucket": sum(a == b for a, b in zip(ours, buckets))})
    _forget(client, "{gcra:")
    return pd.DataFrame(rows)
