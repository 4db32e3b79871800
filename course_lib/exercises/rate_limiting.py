"""Checkers for chapter 05's exercises (see `course_lib.exercises` for the pattern).

Each checker plays the other app servers against the learner's limiter (`adversary`): another app
server counts its own requests right after each of the learner's commands in turn
(`every_interleaving`), and the learner's app server crashes after each of its round trips in turn
(`every_crash`).

Keys written, all under `course:rate_limiting:exercise:`: `fixed:<n>` (strings, counters) and
`log:<n>` (the sliding log's sorted set, plus any helper keys the learner names with `log:<n>` as a
prefix). `evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary, bounded, every_crash, every_interleaving


def _decision(value) -> bool:
    """The learner's answer as a bool: True/False (or the 1/0 a script returns)."""
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return returned(value, bool, "True (allowed) or False (denied)")


def check_fixed_window(client, solution) -> None:
    """A fixed window that cannot leak

    `solution(client, counter, limit, window)` counts one request in the counter key `counter`
    (one key per window, named by the caller) and returns True if it is within `limit` (limit 0:
    every request is denied), else False. The properties checked:

    - exact: with other app servers counting in the same key, the count is every request's, and
      none is lost between the learner's commands (the other app server acts after each of them);
    - decided on its own count: when another app server takes the window's last request right
      after any of the learner's commands, the learner's request is denied (a count read before
      counting is stale by then);
    - expiring: the counter gets a TTL of `window` seconds from its first request and keeps it
      (later requests do not push the window's end back);
    - crash-safe: whichever round trip the app server dies after, the counter is never left
      without a TTL; and a counter an earlier crash left without one gets one.
    """
    prefix = exercise_prefix(check_fixed_window)
    counter, limit, window = prefix + "fixed:1", 3, 60

    with bounded(client) as adversary:  # a retry that never ends is stopped
        answers = [_decision(solution(adversary.client, counter, limit, window)) for _ in range(limit + 2)]
        adversary.require_used()
    if answers != [True] * limit + [False] * 2:
        raise ExerciseFailed(f"with limit {limit}, five requests should be allowed, allowed, allowed, denied, denied; "
                             f"got {answers}")
    ttl_ms = client.pttl(counter)
    if ttl_ms < 0:
        raise ExerciseFailed("after its requests the counter has no TTL: give it an expiry so the window ends")
    if not window * 1000 - 5000 < ttl_ms <= window * 1000:
        raise ExerciseFailed(f"after its requests the counter's TTL is {ttl_ms} ms, not about {window} s: "
                             "the window must last `window` seconds from its first request")

    zero = prefix + "fixed:zero"
    if _decision(solution(client, zero, 0, window)):
        raise ExerciseFailed("with limit 0 the first request was allowed: a limit of 0 denies every request")

    client.pexpire(counter, 1500)  # as if the window were nearly over
    solution(client, counter, limit, window)
    if client.pttl(counter) > 1500:
        raise ExerciseFailed("a later request pushed the window's end back: under steady traffic the counter "
                             "would never expire. The TTL must be set only when the counter has none")

    def fresh() -> None:
        client.delete(counter)

    def no_ttl() -> str | None:
        return "left the counter without a TTL (it never expires)" if client.ttl(counter) == -1 else None

    every_crash(client, fresh, lambda c: solution(c, counter, limit, window), no_ttl, "counting a request")

    leftover = prefix + "fixed:2"
    client.set(leftover, 1)  # what a process that died between counting and setting the TTL leaves behind
    solution(client, leftover, limit, window)
    if client.ttl(leftover) < 0:
        raise ExerciseFailed("a counter left without a TTL (a crash between counting and EXPIRE) stays without one, "
                             "so that client is denied forever once it reaches the limit: make setting the TTL "
                             "not depend on the count being 1")

    def other_counts(other) -> None:  # another app server counts its own request, atomically
        with other.pipeline(transaction=True) as pipe:
            pipe.incr(counter).expire(counter, window, nx=True).execute()

    def judge(at: int, _answer) -> None:
        count = int(client.get(counter) or 0)
        if count != 2:
            raise ExerciseFailed(f"another app server counted one request right after your command {at} on the "
                                 f"counter, yet the counter ended at {count}, not 2: a request was lost between "
                                 "reading and writing the count (a lock inside your process cannot stop another "
                                 "app server). Let one atomic command do the counting")

    every_interleaving(client, counter, fresh, lambda c: solution(c, counter, limit, window), other_counts, judge)

    others_allowed: list[bool] = []

    def one_left() -> None:
        client.set(counter, limit - 1, ex=window)

    def other_takes_one(other) -> None:  # another app server counts its request, and is allowed if it fits
        with other.pipeline(transaction=True) as pipe:
            count, _ = pipe.incr(counter).expire(counter, window, nx=True).execute()
        others_allowed.append(count <= limit)

    def judge_the_last(at: int, answer) -> None:
        if _decision(answer) and others_allowed[-1]:
            raise ExerciseFailed(f"one request was left in the window (limit {limit}); another app server took it "
                                 f"right after your command {at} on the counter, and your request was allowed too: "
                                 f"{limit + 1} requests in one window. Decide on the count your own counting "
                                 "returned, not on one read before it")

    every_interleaving(client, counter, one_left, lambda c: solution(c, counter, limit, window), other_takes_one,
                       judge_the_last)


def _keys(client, command: tuple) -> list[str]:
    """The keys a sent command names, as the server reads them (COMMAND GETKEYS: a script's KEYS too)."""
    try:
        return client.command_getkeys(*command)
    except ResponseError:  # a command without keys (MULTI, PING...)
        return []


def _in_window(client, log: str, now_ms: int, window_ms: int) -> int:
    """How many entries of the log count at `now_ms` (scored after now - window)."""
    return client.zcount(log, f"({now_ms - window_ms}", "+inf")


def check_sliding_log(client, solution) -> None:
    """An atomic sliding log

    `solution(client, log, limit, window_ms, now_ms)` allows a request if fewer than `limit`
    requests were allowed in the last `window_ms` milliseconds (a request counts while
    now_ms - its time < window_ms; limit 0 denies everything), records it if allowed, and returns
    True/False. Layout: `log` is a sorted set with one member per allowed request, scored by its
    time in ms (other app servers share it); helper keys, if any, are named `log` + a suffix. The
    properties checked:

    - exact: decisions at the window's edges, two requests in one millisecond, denied requests
      not recorded (not even for a moment: a crash right after recording one keeps it);
    - bounded: requests that left the window are removed, so under steady traffic the log never
      outgrows the window;
    - every key it names (read from the commands sent, scripts' KEYS included) is `log` or starts
      with `log`: no shared key of a fixed name;
    - atomic across app servers: right after each of the learner's commands on the log in turn,
      another app server admits requests until the window is full; the learner must never add one
      more (a lock inside one process cannot stop another app server);
    - expiring: the log and its helper keys get a TTL of about one window, so a client that stops
      calling leaves nothing behind, and no crash between round trips leaves a key without one.
    """
    prefix = exercise_prefix(check_sliding_log)
    steps = [(0, True), (100, True), (100, True), (300, False), (999, False), (1000, True), (1050, False),
             (1100, True), (1101, True), (1102, False)]
    log = prefix + "log:steps"
    with bounded(client) as adversary:  # a retry that never ends is stopped
        for now_ms, expected in steps:
            got = _decision(solution(adversary.client, log, 3, 1000, now_ms))
            adversary.require_used()
            if got != expected:
                hint = ("two requests at the same millisecond must both count: make each entry's member unique"
                        if now_ms == 300 else
                        "an entry leaves the window once now - its time >= window"
                        if now_ms in (1000, 1100) else "count only the requests that were allowed")
                raise ExerciseFailed(f"limit 3 per 1000 ms, requests at {[s for s, _ in steps]}: at {now_ms} "
                                     f"expected {expected}, got {got}. Hint: {hint}")
        sent = [command for batch in adversary.sent for command in batch]
    elsewhere = sorted({name for command in sent for name in _keys(client, command) if not name.startswith(log)})
    if elsewhere:
        raise ExerciseFailed(f"your function named {elsewhere}, keys that are not the log's: every client would share "
                             "them, nothing makes them expire with the log, and on a cluster they live on another "
                             "node. Name helper keys after the `log` argument (it + a suffix)")
    stale = client.zcount(log, "-inf", steps[-1][0] - 1000)
    if stale:
        raise ExerciseFailed(f"after a request at {steps[-1][0]} ms the log still holds {stale} requests that left the "
                             "window (1000 ms): remove them as you go, or under steady traffic the log grows without "
                             "bound and its TTL never comes")
    names = list(client.scan_iter(match=log + "*"))
    if any(not 0 < client.pttl(name) <= 2000 for name in names):
        raise ExerciseFailed(f"after the requests, {sorted(names)} should all expire within about one window "
                             f"(1000 ms) of the last request; TTLs in ms: {[client.pttl(n) for n in names]}. "
                             "Without an expiry a client that stops calling leaves its log forever")

    zero = prefix + "log:zero"
    if _decision(solution(client, zero, 0, 1000, 0)) or client.exists(zero):
        raise ExerciseFailed("with limit 0 a request was allowed or recorded: a limit of 0 denies every request")

    limit, window_ms, now_ms = 4, 60_000, 1_000_000
    race = prefix + "log:race"

    def empty() -> None:
        for name in client.scan_iter(match=race + "*"):
            client.delete(name)

    def half_full() -> None:
        empty()
        client.zadd(race, {"earlier-1": now_ms - 10, "earlier-2": now_ms - 5})

    def fill_the_window(other) -> None:  # another app server admits requests until the window is full
        room = limit - _in_window(other, race, now_ms, window_ms)
        other.zadd(race, {f"other-{n}": now_ms for n in range(room)})

    def judge(at: int, _allowed) -> None:
        admitted = _in_window(client, race, now_ms, window_ms)
        if admitted > limit:
            raise ExerciseFailed(f"another app server filled the window (limit {limit}) right after your command "
                                 f"{at} on the log, and your function still added a request: {admitted} in one "
                                 "window. Counting and adding in separate commands lets every app server see "
                                 "room; a lock inside your process cannot stop another app server")

    def call(c):
        return solution(c, race, limit, window_ms, now_ms)

    every_interleaving(client, race, half_full, call, fill_the_window, judge)

    def unexpiring() -> str | None:
        eternal = sorted(name for name in client.scan_iter(match=race + "*") if client.ttl(name) == -1)
        return f"left {eternal} without a TTL" if eternal else None

    every_crash(client, empty, call, unexpiring, "recording a request")

    def full() -> None:
        empty()
        client.zadd(race, {f"earlier-{n}": now_ms - 10 - n for n in range(limit)})
        client.pexpire(race, window_ms)

    def over_the_limit() -> str | None:
        admitted = _in_window(client, race, now_ms, window_ms)
        if admitted > limit:
            return (f"left {admitted} requests in a window of {limit}: a request that is denied must never be "
                    "recorded, not even until a later command removes it")
        return unexpiring()

    every_crash(client, full, call, over_the_limit, "a request to a full window")
