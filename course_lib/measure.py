"""Timing helpers for the measured claims: many samples, robust statistics, no single lucky run."""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable


def latencies(operation: Callable[[], object], samples: int, warmup: int = 10) -> list[float]:
    """Run `operation` `warmup` times unmeasured, then `samples` times; each duration in seconds."""
    for _ in range(warmup):
        operation()
    result = []
    for _ in range(samples):
        start = time.perf_counter()
        operation()
        result.append(time.perf_counter() - start)
    return result


def take_turns(operations: dict[str, Callable[[], object]], rounds: int, calls: int = 1,
               warmup: int = 1) -> dict[str, float]:
    """Time `operations` in turn, `rounds` times `calls` calls each; each one's quickest turn, in seconds per call.

    Taking turns spreads a moment of load from another program over every operation alike, and
    the quickest turn (its median call) is what an operation costs when the machine lets it run:
    a comparison of those survives a noisy neighbour (a parallel test run, say) that a median over
    every call may not. Each operation is first called `warmup` times, untimed.
    """
    for operation in operations.values():
        latencies(operation, samples=0, warmup=warmup)
    quickest = {name: math.inf for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():
            quickest[name] = min(quickest[name], statistics.median(latencies(operation, calls, warmup=0)))
    return quickest


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by the nearest-rank method."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    """Median, p95, p99 and max in milliseconds, for a table beside a verdict."""
    return {
        "median_ms": statistics.median(values) * 1000,
        "p95_ms": percentile(values, 95) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": max(values) * 1000,
    }
