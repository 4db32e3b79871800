"""Bounded waits: run one piece of work in several threads at once, and wait for a real event.

`run_together` is for the races, experiments and exercise checkers; `wait_for` polls a condition
until it holds (a server answers, a replica catches up), instead of sleeping and hoping. Either
wait ends at its deadline with `TimedOut`, the course's one timeout error.

A bare loop of `threading.Thread(...).start()` and `.join()` gets three things wrong, so `run_together`
does them right, once:

- an exception raised in a thread is printed to stderr and otherwise lost: the caller would go on
  to count a result that the crash made meaningless. Here it is re-raised in the caller's thread;
- threads started one after another barely overlap (the first may finish before the last starts),
  so a race may never show. A `threading.Barrier` holds every thread until all have started,
  then releases them together: the most overlap threads can get, which is what a race demo needs;
- a thread that never returns would hang its caller. Every wait is bounded: a thread still running
  at the deadline is reported (`StillRunning`, a `TimedOut`), and it is a daemon thread, so it
  cannot keep the interpreter from exiting either.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

T = TypeVar("T")

START_TIMEOUT = 30.0  # seconds a thread waits at the barrier for the others; starting takes microseconds


class TimedOut(TimeoutError):
    """A bounded wait ended before what it waited for happened."""


class StillRunning(TimedOut):
    """Some threads of a `run_together` had not finished by its deadline."""


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy, and return that; a bounded wait on a real event.

    Raises:
        TimedOut: `timeout` seconds passed; the message names `what` was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimedOut(f"Timed out after {timeout:g} s waiting for {what}.")
        time.sleep(0.01)


def run_together(work: Callable[[int], T], threads: int, timeout: float, what: str) -> list[T]:
    """Call `work(slot)` for slot 0 .. `threads` - 1, each in its own thread, all released at once.

    Args:
        work: what each thread does; the slot number tells the threads apart.
        threads: how many threads to run.
        timeout: seconds the threads may take, all together, counted from their start.
        what: names the run in the error and the threads (`<what> #<slot>`), e.g. "counter race".

    Returns:
        What `work` returned in each thread, in slot order.

    Raises:
        StillRunning: some thread had not returned after `timeout` seconds.
        BaseException: the first exception a thread raised, re-raised once all threads have ended.
    """
    start = threading.Barrier(threads)
    results: list = [None] * threads
    errors: list[BaseException] = []  # in the order they happened

    def run(slot: int) -> None:
        try:
            start.wait(timeout=START_TIMEOUT)
            results[slot] = work(slot)
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    workers = [threading.Thread(target=run, args=(slot,), name=f"{what} #{slot}", daemon=True)
               for slot in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + timeout
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
    running = sum(worker.is_alive() for worker in workers)
    if running:
        raise StillRunning(f"{what}: {running} of {threads} threads did not finish within {timeout:g} s")
    if errors:
        raise errors[0]
    return results
