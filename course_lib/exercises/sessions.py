"""Checkers for chapter 06's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:sessions:exercise:`: `session:<id>` (hashes with a `user` field),
`user:<user>` (sets of session ids) and `json:<n>` (strings holding JSON). `evaluate` deletes them
before and after each check.
"""

from __future__ import annotations

import json
import math
import random

from course_lib.exercises import ExerciseFailed, exercise_prefix

UNSAFE_IN_COOKIES = set(' ;,"\\\t\r\n')


def _estimated_bits(ids: list[str]) -> float:
    """Sum over character positions of log2(distinct characters seen there): an upper bound on entropy."""
    positions = max(len(i) for i in ids)
    return sum(math.log2(len({i[p] for i in ids if len(i) > p}) or 1) for p in range(positions))


def check_session_id(client, solution) -> None:
    """Unguessable session ids

    `solution()` returns a new session id: a string with at least 128 bits from a cryptographic
    random source, safe to put in a cookie.
    """
    ids = [solution() for _ in range(2000)]
    if not all(isinstance(i, str) and i for i in ids):
        raise ExerciseFailed(f"return a non-empty string, got {ids[0]!r:.60}")
    if len(set(ids)) != len(ids):
        raise ExerciseFailed(f"2000 ids contained {len(ids) - len(set(ids))} repeats: ids must never repeat")
    unsafe = sorted({ch for i in ids for ch in i if ch in UNSAFE_IN_COOKIES or not ch.isprintable()})
    if unsafe:
        raise ExerciseFailed(f"ids contain characters that break a cookie header: {unsafe}; use URL-safe base64 or hex")
    bits = _estimated_bits(ids)
    if bits < 128:
        raise ExerciseFailed(f"2000 ids vary in at most about {bits:.0f} bits (positions that never change count for "
                             "nothing): use at least 16 random bytes, e.g. secrets.token_urlsafe(32)")
    state = random.getstate()
    try:
        random.seed(20_240_601)
        first = solution()
        random.seed(20_240_601)
        second = solution()
    finally:
        random.setstate(state)
    if first == second:
        raise ExerciseFailed("re-seeding Python's `random` module reproduced the same id: `random` is predictable "
                             "(its state can be rebuilt from its outputs). Use the `secrets` module")


def check_log_out_everywhere(client, solution) -> None:
    """Log out everywhere

    `solution(client, prefix, user)` deletes every session of `user`, using the index, and returns
    how many sessions it deleted. Sessions are hashes `<prefix>session:<id>` with a field `user`;
    `<prefix>user:<user>` is a set of that user's session ids (it may list ids that already expired).
    """
    prefix = exercise_prefix(check_log_out_everywhere)
    sessions = {"a1": "alice", "a2": "alice", "a3": "alice", "b1": "bob", "b2": "bob"}
    for session_id, user in sessions.items():
        client.hset(f"{prefix}session:{session_id}", mapping={"user": user})
        client.sadd(f"{prefix}user:{user}", session_id)
    client.sadd(f"{prefix}user:alice", "a0-expired")  # listed, but its session is already gone
    returned = solution(client, prefix, "alice")
    left = {i for i in sessions if client.exists(f"{prefix}session:{i}")}
    if left & {"a1", "a2", "a3"}:
        raise ExerciseFailed(f"alice's sessions {sorted(left & {'a1', 'a2', 'a3'})} still exist: delete each session "
                             "key listed in her index (SMEMBERS, then DEL), not only the index")
    if left != {"b1", "b2"}:
        raise ExerciseFailed("bob's sessions were deleted too: only the ids in alice's index may go")
    if client.exists(f"{prefix}user:alice"):
        raise ExerciseFailed("alice's index still exists: delete it too, or it keeps listing dead sessions")
    if returned != 3:
        raise ExerciseFailed(f"return how many sessions were deleted (3: DEL counts only keys that existed), "
                             f"got {returned!r}")


def check_sliding_read(client, solution) -> None:
    """Read and slide in one command

    `solution(client, session_key, idle)` returns the JSON-string session at `session_key` as a
    dict (None if there is none) and restarts its idle timer at `idle` seconds, in one round trip.
    """
    prefix = exercise_prefix(check_sliding_read)
    live = prefix + "json:1"
    client.set(live, json.dumps({"user": "alice", "cart": ["tea"]}), ex=5)
    got = solution(client, live, 1800)
    if got != {"user": "alice", "cart": ["tea"]}:
        raise ExerciseFailed(f"expected the stored session as a dict, got {got!r:.80}: parse the JSON (json.loads)")
    ttl = client.ttl(live)
    if ttl <= 5:
        raise ExerciseFailed(f"the session's TTL is still {ttl} s: reading must restart it at `idle` "
                             "(GETEX key EX idle reads and restarts in one command)")
    missing = prefix + "json:2"
    if solution(client, missing, 1800) is not None:
        raise ExerciseFailed("a missing session must give None")
    if client.exists(missing):
        raise ExerciseFailed("reading a missing session created a key: never write when there is nothing to read")
