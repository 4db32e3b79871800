"""Checkers for chapter 07's exercises (see `course_lib.exercises` for the pattern).

Round trips are counted on the client by `RoundTripCounter` (exact, no timing, no server-wide
statistics), so a checker can tell a pipeline from a loop of single commands.

Keys written, all under `course:pipelines:exercise:`: `item:<n>` (strings) and `user:<n>` (hashes).
`evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from course_lib.exercises import ExerciseFailed, exercise_prefix
from course_lib.pipelines import RoundTripCounter, batched

ITEMS = 5000
MAX_ROUND_TRIPS = 10
MAX_BATCH = 1000


def check_bulk_load(client, solution) -> None:
    """Bulk load in chunks

    `solution(client, items)` writes every name -> value of the dict `items` (5,000 strings) in
    at most 10 round trips, at most 1,000 commands per round trip, without MULTI/EXEC.
    """
    prefix = exercise_prefix(check_bulk_load)
    items = {f"{prefix}item:{n}": str(n) for n in range(ITEMS)}
    counter = RoundTripCounter(client)
    try:
        solution(counter.client, items)
    finally:
        counter.close()
    stored = list(batched(client, (("GET", name) for name in items), size=MAX_BATCH))
    missing = sum(value != expected for value, expected in zip(stored, items.values()))
    if missing:
        raise ExerciseFailed(f"{missing} of {ITEMS} keys are missing or hold the wrong value")
    if counter.round_trips > MAX_ROUND_TRIPS:
        raise ExerciseFailed(f"that took {counter.round_trips} round trips (at most {MAX_ROUND_TRIPS}): queue the SETs "
                             "on a pipeline and execute it once per chunk, not once per key")
    if counter.commands["MULTI"]:
        raise ExerciseFailed("your pipeline sent MULTI/EXEC: redis-py's pipeline() is a transaction by default; "
                             "a bulk load needs pipeline(transaction=False)")
    if max(counter.batch_sizes) > MAX_BATCH:
        raise ExerciseFailed(f"one round trip carried {max(counter.batch_sizes)} commands (at most {MAX_BATCH}): "
                             "a pipeline buffers every command and reply, so execute it every 1,000 commands")


def check_read_profiles(client, solution) -> None:
    """Read many hashes in one round trip

    `solution(client, names)` returns {name: fields} for every hash in the list `names` that
    exists (missing ones left out), using exactly one round trip.
    """
    prefix = exercise_prefix(check_read_profiles)
    names = [f"{prefix}user:{n}" for n in range(20)]
    expected = {name: {"name": f"user {n}", "visits": str(n)} for n, name in enumerate(names) if n % 4}
    for name, fields in expected.items():
        client.hset(name, mapping=fields)
    counter = RoundTripCounter(client)
    try:
        got = solution(counter.client, names)
    finally:
        counter.close()
    if not isinstance(got, dict):
        raise ExerciseFailed(f"return a dict of name -> fields, got {type(got).__name__}")
    if set(got) != set(expected):
        extra, lost = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
        raise ExerciseFailed(f"wrong names: {len(extra)} missing hashes included (HGETALL of a missing key gives {{}}: "
                             f"leave those out), {len(lost)} existing ones left out")
    if got != expected:
        raise ExerciseFailed("some hashes came back with the wrong fields: return what HGETALL gives")
    if counter.round_trips != 1:
        raise ExerciseFailed(f"that took {counter.round_trips} round trips: queue one HGETALL per name on a pipeline "
                             "and execute it once")
