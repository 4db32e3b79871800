"""Checkers for chapter 07's exercises (see `course_lib.exercises` for the pattern).

Round trips, and the commands and keys in each, are counted on the client by the adversary's
client (`Adversary`, built on `RoundTripCounter`): exact, no timing, no server-wide statistics,
so a checker can tell a pipeline from a loop of single commands, and a bounded batch from one
giant command.

Keys written, all under `course:pipelines:exercise:`: `item:<n>` (strings) and `user:<n>` (hashes).
`evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from collections import Counter

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary
from course_lib.keys import delete_prefix
from course_lib.pipelines import batched

MAX_KEYS = 1000  # keys named per round trip
SIZES = (5000, 1500)  # items per bulk load; 1,500 is not a multiple of a chunk


def _items(prefix: str, n: int) -> dict[str, object]:
    """`n` names -> values of several kinds: numbers as strings and as ints, an empty string, text."""
    kinds = (lambda i: str(i), lambda i: i, lambda i: "", lambda i: f"item {i} · café")
    return {f"{prefix}item:{i}": kinds[i % len(kinds)](i) for i in range(n)}


def _bulk_load_once(client, solution, items: dict) -> Adversary:
    with Adversary(client) as adversary:
        solution(adversary.client, dict(items))
    return adversary


def check_bulk_load(client, solution) -> None:
    """Bulk load in chunks

    `solution(client, items)` writes every name -> value of the dict `items` (values are strings
    or integers, some empty strings; each must read back as `str(value)`) with these bounds:
    - at most 1,000 keys per round trip, counted as the item names the round trip's commands
      carry: one SET names one key, an MSET of 1,000 pairs names 1,000 (allowed: the bound is on
      what one round trip buffers, on the client and in the server's reply buffer, not on how
      the keys are spelled);
    - at most twice the round trips that bound needs (10 for 5,000 keys, 4 for 1,500);
    - no MULTI/EXEC: a bulk load needs no transaction;
    - an empty `items` sends nothing at all (0 round trips) and does not fail.
    It is called with 5,000 and with 1,500 items, and with none.
    """
    prefix = exercise_prefix(check_bulk_load)
    for n in SIZES:
        delete_prefix(client, prefix)
        items = _items(prefix, n)
        adversary = _bulk_load_once(client, solution, items)
        adversary.require_used()
        replies = batched(client, (("GET", name) for name in items), size=MAX_KEYS)
        wrong = sum(stored != str(value) for stored, value in zip(replies, items.values()))
        if wrong:
            raise ExerciseFailed(f"with {n} items, {wrong} of {n} keys are missing or hold the wrong value "
                                 "(every item counts, whatever its value, an empty string included)")
        if adversary.commands["MULTI"]:
            raise ExerciseFailed("your function sent MULTI/EXEC: redis-py's pipeline() is a transaction unless "
                                 "told otherwise, and a bulk load needs none (it only costs the server more)")
        names = set(items)
        per_trip = [sum(arg in names for command in sent for arg in command[1:]) for sent in adversary.sent]
        if max(per_trip) > MAX_KEYS:
            raise ExerciseFailed(f"one round trip carried {max(per_trip)} keys (at most {MAX_KEYS}), whether as "
                                 "many SETs or one long MSET: everything in a round trip is buffered on both sides "
                                 "until it completes, so send the items in bounded chunks")
        allowed = 2 * -(-n // MAX_KEYS)
        if adversary.round_trips > allowed:
            raise ExerciseFailed(f"{n} items took {adversary.round_trips} round trips (at most {allowed}): "
                                 "each round trip should carry a whole chunk of keys, not one key")
    delete_prefix(client, prefix)
    try:
        adversary = _bulk_load_once(client, solution, {})
    except Exception as error:
        raise ExerciseFailed(f"called with an empty dict, your function raised {type(error).__name__}: {error} "
                             "(with nothing to write, write nothing)") from None
    if adversary.round_trips:
        raise ExerciseFailed(f"called with an empty dict, your function made {adversary.round_trips} round "
                             f"trip(s) ({', '.join(adversary.batches[0])}): with nothing to write, send nothing")


def check_read_profiles(client, solution) -> None:
    """Read many hashes in one round trip

    `solution(client, names)` returns a dict {name: fields} for every hash in the list `names` that
    exists (fields as HGETALL gives them, a field holding "" included); names of missing hashes are
    left out. Exactly one round trip for a non-empty list; an empty list returns {} with no round
    trip at all.
    """
    prefix = exercise_prefix(check_read_profiles)
    names = [f"{prefix}user:{n}" for n in range(20)]
    expected = {name: {"name": f"user {n}" if n != 1 else "", "visits": str(n)}
                for n, name in enumerate(names) if n % 4}
    for name, fields in expected.items():
        client.hset(name, mapping=fields)
    with Adversary(client) as adversary:
        got = solution(adversary.client, list(names))
    adversary.require_used()
    got = returned(got, dict, "a dict of name -> fields")
    extra, lost = len(set(got) - set(expected)), len(set(expected) - set(got))
    if extra:
        raise ExerciseFailed(f"{extra} names of missing hashes are in your dict: HGETALL of a missing key gives an "
                             "empty reply, and those names must be left out")
    if lost:
        raise ExerciseFailed(f"{lost} existing hashes are missing from your dict (a hash exists even when one of its "
                             "fields holds an empty string)")
    if got != expected:
        raise ExerciseFailed("some hashes came back with the wrong fields: return what HGETALL gives")
    if adversary.round_trips != 1:
        trips = [", ".join(f"{n} {name}" for name, n in Counter(batch).items()) for batch in adversary.batches[:3]]
        raise ExerciseFailed(f"that took {adversary.round_trips} round trips ({' | '.join(trips)}"
                             f"{' | ...' if adversary.round_trips > 3 else ''}): every read the answer needs "
                             "must travel in one round trip")
    with Adversary(client) as adversary:
        empty = solution(adversary.client, [])
    if returned(empty, dict, "a dict (an empty one for an empty list)") != {}:
        raise ExerciseFailed(f"for an empty list of names your function returned {empty!r:.60}, expected {{}}")
    if adversary.round_trips:
        raise ExerciseFailed(f"for an empty list of names your function made {adversary.round_trips} round trip(s): "
                             "with nothing to read, send nothing")
