"""Checkers for chapter 06's exercises (see `course_lib.exercises` for the pattern).

The checkers use the adversary (`adversary.py`): ids are drawn in forked processes that start
from the same state (the clock and the process id fixed), another app server logs a user in
between the learner's commands, the learner's app server crashes after each round trip in turn,
and round trips and commands are counted.

Keys written, all under `course:sessions:exercise:`: `session:<id>` (hashes with a `user` field),
`user:<user>` (sets of session ids) and `json:<n>` (strings holding JSON). `evaluate` deletes them
before and after each check.
"""

from __future__ import annotations

import json
import math
import os
import random
import time

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import (Adversary, ProcessesFailed, bounded, every_crash, every_interleaving,
                                            run_in_processes)
from course_lib.keys import delete_prefix
from course_lib.pipelines import command_calls

UNSAFE_IN_COOKIES = set(' ;,"\\\t\r\n')
POLICY_BITS = 128  # the course's policy for session ids (OWASP's own floor is 64 bits of entropy)
_FROZEN = {"time": 1_700_000_000.0, "time_ns": 1_700_000_000 * 10**9, "monotonic": 1000.0,
           "monotonic_ns": 1000 * 10**9, "perf_counter": 1000.0, "perf_counter_ns": 1000 * 10**9}


def _estimated_bits(ids: list[str]) -> float:
    """Sum over character positions of log2(distinct characters seen there): an upper bound on entropy."""
    positions = max(len(i) for i in ids)
    return sum(math.log2(len({i[p] for i in ids if len(i) > p}) or 1) for p in range(positions))


def _ids_of_a_cloned_app_server(solution):
    """Returns a function for `run_in_processes`: in a forked child, fix the clock and the process id,
    draw one id while counting the bytes it takes from the OS's random source (`os.urandom`, and
    `secrets`, `random.SystemRandom` and `uuid.uuid4`, which read it), re-seed `random` with a fixed
    seed, draw another; return both ids and the fewest bytes one of 3 ids took (0: a source the
    checker cannot see)."""

    def draw(_slot: int) -> tuple[str, str, int]:
        clock, getpid = {name: getattr(time, name) for name in _FROZEN}, os.getpid
        urandom, system_urandom = os.urandom, random._urandom
        drawn = [0]

        def counted(n: int) -> bytes:
            drawn[0] += n
            return urandom(n)

        try:
            for name, value in _FROZEN.items():
                setattr(time, name, lambda value=value: value)
            os.getpid = lambda: 4242
            os.urandom = random._urandom = counted
            first = solution()
            fewest = drawn[0]
            for _ in range(2):  # the fewest of 3 draws: a rejection sampler (randbelow) sometimes draws twice
                drawn[0] = 0
                solution()
                fewest = min(fewest, drawn[0])
            os.urandom, random._urandom = urandom, system_urandom
            random.seed(20_240_601)
            return first, solution(), fewest
        finally:
            for name, function in clock.items():
                setattr(time, name, function)
            os.getpid = getpid
            os.urandom, random._urandom = urandom, system_urandom

    return draw


def check_session_id(client, solution) -> None:
    """Unguessable session ids

    `solution()` returns a new session id: a string, safe to put in a cookie, that never repeats
    and carries at least 128 bits (the course's policy) drawn from a cryptographic random source,
    the operating system's. The properties checked:

    - 2000 ids: strings, all different, only cookie-safe characters, varying in >= 128 bits;
    - unpredictable: two app servers forked from the same state, with the clock and the process
      id fixed, must still draw different ids (a counter, a timestamp, a process id, a generator
      seeded once, or a hash of any of them repeat there), and so must re-seeding Python's `random`;
    - random bits, not random-looking ones: one id takes at least 16 bytes from the OS's source
      (counted where Python reads it); a hash of fewer looks random but is as guessable as its input.
    """
    ids = [returned(solution(), str, "the id as a string") for _ in range(2000)]
    if not all(ids):
        raise ExerciseFailed("your function returned an empty string: an id must not be empty")
    if len(set(ids)) != len(ids):
        raise ExerciseFailed(f"2000 ids contained {len(ids) - len(set(ids))} repeats: ids must never repeat")
    unsafe = sorted({ch for i in ids for ch in i if ch in UNSAFE_IN_COOKIES or not ch.isprintable()})
    if unsafe:
        raise ExerciseFailed(f"ids contain characters that break a cookie header: {unsafe}; use URL-safe base64 or hex")
    bits = _estimated_bits(ids)
    if bits < POLICY_BITS:
        raise ExerciseFailed(f"2000 ids vary in at most about {bits:.0f} bits (positions that never change count for "
                             f"nothing); the course's policy is at least {POLICY_BITS} random bits per id (a UUID4 "
                             "carries 122: hard to guess, yet under the policy)")
    try:
        (first_a, seeded_a, drawn), (first_b, seeded_b, _) = run_in_processes(_ids_of_a_cloned_app_server(solution), 2, 30)
    except ProcessesFailed as failure:
        raise ExerciseFailed(f"your function failed in a freshly forked app server: {failure}") from None
    if first_a == first_b:
        raise ExerciseFailed("two app servers forked from the same state, with the same clock and process id, drew "
                             "the same id: it comes from something predictable (a counter, the time, the process "
                             "id, a generator seeded once, or a hash of those), which an attacker can replay. Draw "
                             "it from the operating system's cryptographic random source")
    if seeded_a == seeded_b:
        raise ExerciseFailed("re-seeding Python's `random` module reproduced the same id: `random` is predictable "
                             "(its state can be rebuilt from its outputs); it is not a cryptographic source")
    if 0 < drawn * 8 < POLICY_BITS:
        raise ExerciseFailed(f"one id takes only {drawn * 8} bits from the operating system's random source: hashing "
                             "or encoding them makes the id look longer, not harder to guess (an attacker tries the "
                             f"{drawn * 8}-bit inputs). The course's policy is at least {POLICY_BITS} random bits")


def _searches(client) -> int:
    """SCAN and KEYS calls the server has run, those inside scripts included (INFO commandstats)."""
    return command_calls(client, "scan") + command_calls(client, "keys")


def check_log_out_everywhere(client, solution) -> None:
    """Log out everywhere

    `solution(client, prefix, user)` deletes every session of `user` and returns how many sessions
    it deleted. Sessions are hashes `<prefix>session:<id>` with a field `user`; `<prefix>user:<user>`
    is a set of that user's session ids (it may list ids that already expired; a user with no
    sessions has no set). Other app servers log users in meanwhile: they add the new id to the
    index first, then write the session. The properties checked:

    - correct: every session listed is deleted and counted (expired ids count for nothing), no
      other user's session is touched, the ids it removed leave the index; no sessions gives 0;
    - uses the index: no SCAN or KEYS over the keyspace (a script's included: the server's
      command statistics are read before and after the call), and few round trips (not one per
      session: at most 20 for 60 sessions, so reading the index with SSCAN is fine);
    - never orphans a session: if another app server logs the user in between any two of the
      learner's commands, or the learner's app server crashes after any round trip, every live
      session of the user is still listed in the index (so the next log-out finds it).
    """
    prefix = exercise_prefix(check_log_out_everywhere)
    index = f"{prefix}user:alice"

    def start(alices: int = 3) -> None:
        delete_prefix(client, prefix)
        for session_id, user in [*((f"a{n}", "alice") for n in range(1, alices + 1)), ("b1", "bob"), ("b2", "bob")]:
            client.hset(f"{prefix}session:{session_id}", mapping={"user": user})
            client.sadd(f"{prefix}user:{user}", session_id)
        client.sadd(index, "a0-expired")  # listed, but its session is already gone

    def sessions_of(user: str) -> set[str]:
        names = client.scan_iter(match=f"{prefix}session:*")
        return {n.rsplit(":", 1)[1] for n in names if client.hget(n, "user") == user}

    start()
    searches_before = _searches(client)
    with bounded(client) as adversary:  # a retry that never ends is stopped
        deleted = solution(adversary.client, prefix, "alice")
        adversary.require_used()
        searched = adversary.commands["SCAN"] + adversary.commands["KEYS"]
    if searched or _searches(client) > searches_before:
        raise ExerciseFailed("your function searched the keyspace (SCAN or KEYS) instead of reading alice's index: "
                             "on a real server that walks every key of every user, on each log-out")
    left = sessions_of("alice")
    if left:
        raise ExerciseFailed(f"alice's sessions {sorted(left)} still exist: each session listed in her index must go, "
                             "not only the index")
    if sessions_of("bob") != {"b1", "b2"}:
        raise ExerciseFailed("bob's sessions were deleted too: only the ids in alice's index may go")
    if client.exists(index):
        raise ExerciseFailed("alice's index still lists ids after her log-out: remove the ids you deleted, or it "
                             "keeps listing dead sessions")
    if returned(deleted, int, "how many sessions were deleted") != 3:
        raise ExerciseFailed(f"return how many sessions were deleted (3: an id whose session had expired deletes "
                             f"nothing), got {deleted!r}")
    try:
        nobody = solution(client, prefix, "carol")
    except Exception as error:  # the learner's bug: say which case
        raise ExerciseFailed(f"for a user with no sessions (no index) your function raised {type(error).__name__}: "
                             f"{error}. Logging out a user with no sessions must give 0") from None
    if nobody != 0:
        raise ExerciseFailed(f"for a user with no sessions your function returned {nobody!r}, not 0")

    start(alices=60)
    with Adversary(client) as adversary:
        solution(adversary.client, prefix, "alice")
        trips = adversary.round_trips
    if trips > 20:
        raise ExerciseFailed(f"logging out a user with 60 sessions took {trips} round trips: one per session is a "
                             "network wait per session. Send the deletions together")

    def login(other) -> None:  # another app server logs alice in: index first, then the session
        other.sadd(index, "new")
        other.hset(f"{prefix}session:new", mapping={"user": "alice"})

    def orphans() -> set[str]:
        return sessions_of("alice") - client.smembers(index)

    def call(c):
        return solution(c, prefix, "alice")

    def judge(at: int, _deleted) -> None:
        if orphans():
            raise ExerciseFailed(f"another app server logged alice in right after your command {at} on her index, "
                                 "and that live session is no longer in her index, so no later log-out can find "
                                 "it: removing the whole index also removes ids added after you read it")
        if sessions_of("alice") & {"a1", "a2", "a3"}:
            raise ExerciseFailed(f"with another app server logging alice in right after your command {at} on her "
                                 "index, some of her earlier sessions survived the log-out")

    every_interleaving(client, index, start, call, login, judge)

    def orphaned() -> str | None:
        lost = orphans()
        return f"left alice's live sessions {sorted(lost)} out of her index" if lost else None

    every_crash(client, start, call, orphaned, "logging out everywhere")


# INFO commandstats counts every client's commands: in a workshop room another learner's SCAN would
# count as this learner's, so `check()` runs this checker on the learner's own server.
check_log_out_everywhere.reads_server_statistics = True


def check_sliding_read(client, solution) -> None:
    """Read and slide in one command

    `solution(client, session_key, idle)` returns the JSON-string session at `session_key` as a
    dict (None if there is none, and then nothing is written) and restarts its idle timer at `idle`
    seconds. The properties checked: the dict and the TTL are right, and reading and sliding are
    one round trip (one command such as GETEX, or one atomic unit), so neither a crash nor another
    request can fall between them, and a read costs one network wait.
    """
    prefix = exercise_prefix(check_sliding_read)
    live, idle = prefix + "json:1", 1234
    client.set(live, json.dumps({"user": "alice", "cart": ["tea"]}), ex=5)
    with Adversary(client) as adversary:
        got = solution(adversary.client, live, idle)
        adversary.require_used()
        trips, batches = adversary.round_trips, adversary.batches
    if isinstance(got, (str, bytes)):
        raise ExerciseFailed(f"you returned the stored JSON text {got!r:.60}: return it parsed, as a dict")
    if returned(got, dict, "the session as a dict") != {"user": "alice", "cart": ["tea"]}:
        raise ExerciseFailed(f"expected the stored session as a dict, got {got!r:.80}")
    ttl = client.ttl(live)
    if not idle - 5 < ttl <= idle:
        raise ExerciseFailed(f"the session's TTL is {ttl} s after the read: reading must restart it at `idle` "
                             f"({idle} s in this check)")
    if trips != 1:
        raise ExerciseFailed(f"your read took {trips} round trips ({' | '.join(', '.join(b) for b in batches)}): "
                             "a crash or another request can fall between them, and each costs a network wait. "
                             "Read and restart the timer in one round trip")
    missing = prefix + "json:2"
    if solution(client, missing, idle) is not None:
        raise ExerciseFailed("a missing session must give None")
    if client.exists(missing):
        raise ExerciseFailed("reading a missing session created a key: never write when there is nothing to read")
