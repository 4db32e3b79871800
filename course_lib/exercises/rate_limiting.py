"""Checkers for chapter 05's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:rate_limiting:exercise:`: `fixed:<n>` (strings, counters) and
`log:<n>` (whatever the learner's sliding log stores, e.g. a sorted set plus helper keys sharing
the name as a prefix). `evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from course_lib.concurrency import StillRunning, run_together
from course_lib.exercises import ExerciseFailed, exercise_prefix


def check_fixed_window(client, solution) -> None:
    """A fixed window that cannot leak

    `solution(client, counter, limit, window)` counts one request in the counter key `counter`
    (one key per window, named by the caller) and returns True if it is within `limit`. The counter
    must get a TTL of `window` seconds from its first request, keep it, and never be left without one.
    """
    prefix = exercise_prefix(check_fixed_window)
    counter, limit, window = prefix + "fixed:1", 3, 60
    answers = [solution(client, counter, limit, window) for _ in range(limit + 2)]
    if [bool(a) for a in answers] != [True] * limit + [False] * 2:
        raise ExerciseFailed(f"with limit {limit}, five requests should be allowed, allowed, allowed, denied, denied; "
                             f"got {answers}")
    ttl = client.ttl(counter)
    if not 0 < ttl <= window:
        raise ExerciseFailed(f"after its requests the counter's TTL is {ttl}, not up to {window} s: "
                             "give it an expiry (EXPIRE) so the window ends")

    client.pexpire(counter, 1500)  # as if the window were nearly over
    solution(client, counter, limit, window)
    if client.pttl(counter) > 1500:
        raise ExerciseFailed("a later request pushed the window's end back: under steady traffic the counter "
                             "would never expire. Set the TTL only when there is none (EXPIRE ... NX)")

    leftover = prefix + "fixed:2"
    client.set(leftover, 7)  # what a process that died between INCR and EXPIRE leaves behind
    solution(client, leftover, limit, window)
    if client.ttl(leftover) < 0:
        raise ExerciseFailed("a counter left without a TTL (a crash between INCR and EXPIRE) stays without one, so "
                             "that client is denied forever. Send INCR and EXPIRE ... NX together (MULTI), "
                             "not EXPIRE only when the count is 1")


def _race(client, solution, prefix: str, limit: int, rounds: int = 20, threads: int = 8, per_thread: int = 5) -> int:
    """The most requests admitted in one round of `threads` x `per_thread` simultaneous requests."""
    worst = 0
    for n in range(rounds):
        log = f"{prefix}log:race:{n}"

        def send(_slot: int) -> int:
            return sum(bool(solution(client, log, limit, 60_000, 1_000_000)) for _ in range(per_thread))

        try:
            admitted = run_together(send, threads, timeout=60, what="sliding_log race")
        except StillRunning:
            raise ExerciseFailed(f"{threads * per_thread} calls from {threads} threads took over a minute: "
                                 "does your function block?") from None
        worst = max(worst, sum(admitted))
    return worst


def check_sliding_log(client, solution) -> None:
    """An atomic sliding log

    `solution(client, log, limit, window_ms, now_ms)` allows a request if fewer than `limit`
    requests were allowed in the last `window_ms` milliseconds (a request counts while
    now_ms - its time < window_ms), records it if allowed, and returns True/False.
    """
    prefix = exercise_prefix(check_sliding_log)
    steps = [(0, True), (100, True), (100, True), (300, False), (999, False), (1000, True), (1050, False),
             (1100, True), (1101, True), (1102, False)]
    log = prefix + "log:steps"
    for now_ms, expected in steps:
        got = solution(client, log, 3, 1000, now_ms)
        if bool(got) != expected:
            hint = ("two requests at the same millisecond must both count: make each entry's member unique"
                    if now_ms == 300 else
                    "an entry leaves the window once now - its time >= window (remove scores <= now - window)"
                    if now_ms in (1000, 1100) else "count only the requests that were allowed")
            raise ExerciseFailed(f"limit 3 per 1000 ms, requests at {[s for s, _ in steps]}: at {now_ms} expected "
                                 f"{expected}, got {got!r}. Hint: {hint}")
    worst = _race(client, solution, prefix, limit=10)
    if worst > 10:
        raise ExerciseFailed(f"8 threads sending at once got {worst} requests through a limit of 10: checking and "
                             "recording in separate round trips lets them all see room. Do it in one Lua script")
