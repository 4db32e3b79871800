"""Checkers for chapter 01's exercises (see `course_lib.exercises` for the pattern).

Each checker hands the learner's function an `adversary.Adversary` client: another app server
acts right after each of the learner's commands on the exercise's key in turn (a lock inside the
learner's process cannot stop it), the learner's app server crashes after each of its round trips
in turn (`every_crash`), and round trips are counted where the contract bounds them.

Keys written, all under `course:data_types:exercise:`: `board` and `empty` (sorted sets), `log`
(list), `cart` (hash). `evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from typing import Callable

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary, bounded, every_crash

PLAYERS = {"ada": 120, "bob": 300, "cy": 90, "dee": 300, "eve": 250, "fay": 40, "gus": 180,
           "hal": 10, "ivy": 205, "jon": 60, "kim": 75, "lou": 150}


def _interleavings(client, setup: Callable[[], None], call: Callable, key: str,
                   other: Callable, judge: Callable[[int, object, object], None]) -> None:
    """Run `call(client)` once per learner command naming `key`, with `other` acting right after that command.

    `setup()` resets the data before each run; `judge(at, returned, other_result)` raises if the
    outcome is wrong. A first run only counts the learner's commands that name `key`.
    """
    setup()
    with Adversary(client) as counting:
        counted = counting.after(key, lambda _other: None, at=10**9)
        call(counting.client)
        counting.require_used()
    for at in range(1, counted.touches + 1):
        setup()
        with Adversary(client) as adversary:
            interference = adversary.after(key, other, at=at)
            judge(at, call(adversary.client), interference.result)


# -- exercise 1: top scores ----------------------------------------------------------------------

def _pairs(result) -> list[tuple[str, float]]:
    pairs = []
    for pair in returned(result, (list, tuple), "a list of (player, score) pairs"):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], (int, float))):
            raise ExerciseFailed(f"return a list of (player, score) pairs with numeric scores, got {result!r:.80} "
                                 "(ask for the scores too, WITHSCORES)")
        pairs.append((pair[0], float(pair[1])))
    return pairs


def _expected_top(n: int) -> list[tuple[str, float]]:
    # Redis orders equal scores by name, and REV reverses both: score, then name, descending
    ranked = sorted(PLAYERS.items(), key=lambda pair: (pair[1], pair[0]), reverse=True)
    return [(member, float(score)) for member, score in ranked[:n]]


def check_top_scores(client, solution) -> None:
    """Top scores

    `solution(client, board, n)` returns the n best (player, score) pairs of the sorted set
    `board`, highest score first, as a list. The properties checked:

    - ordered by Redis: highest score first, and equal scores in the order `ZRANGE ... REV` gives
      them (names descending), so the server picks and orders them in O(log N + n);
    - one round trip: a single command reads them (no per-player ZSCORE, no second query), and
      it reads only those n (not the whole board, sliced in Python);
    - edges: n = 0 gives [] (ZRANGE's stop index n - 1 = -1 means "to the end"), n larger than
      the board gives the whole board, and a board that does not exist gives [];
    - a list of (player, score) pairs, the score a number.
    """
    prefix = exercise_prefix(check_top_scores)
    board, empty = prefix + "board", prefix + "empty"
    client.zadd(board, PLAYERS)
    for name, n, size in ((board, 3, len(PLAYERS)), (board, 5, len(PLAYERS)), (board, 20, len(PLAYERS)),
                          (board, 0, len(PLAYERS)), (empty, 3, 0)):
        where = f"asked for the top {n} of {size} players" if size else f"asked for the top {n} of a board that does not exist"
        with Adversary(client) as adversary:
            try:
                answer = solution(adversary.client, name, n)
            except NotImplementedError:
                raise
            except Exception as error:  # the learner's bug, told with the case that caused it
                raise ExerciseFailed(f"{where}, your function raised {type(error).__name__}: {error}") from None
            got = _pairs(answer)
            if n and size:
                adversary.require_used()
            round_trips, values_read = adversary.round_trips, adversary.values_read
            commands = sum(adversary.batch_sizes)
        expected = _expected_top(n) if size else []
        if got == expected:
            if round_trips > 1:
                raise ExerciseFailed(f"{where}: the answer is right but took {round_trips} round trips; one command "
                                     "can return the players with their scores, already ordered")
            # a player and a score each (one spare player), and an OK or a count per command
            if values_read > 2 * (len(expected) + 1) + commands:
                raise ExerciseFailed(f"{where}: the answer is right but your function read {values_read} values from "
                                     f"the server to keep {len(expected)} players: with a million players that is the "
                                     "whole board on every call. Ask Redis for the n best only")
            continue
        if n == 0 and len(got) == size:
            raise ExerciseFailed(f"{where}, got the whole board: a stop index of n - 1 = -1 means 'to the end' "
                                 "for ZRANGE, so n = 0 needs care")
        if not size:
            raise ExerciseFailed(f"{where}, got {got!r:.80}: a missing key reads as an empty sorted set")
        if sorted(got) == sorted(expected) and [s for _, s in got] == [s for _, s in expected]:
            raise ExerciseFailed("players with equal scores are out of order: Redis orders ties by name and REV "
                                 "reverses that too, so let the server do all the ordering")
        if sorted(got) == sorted(expected):
            raise ExerciseFailed(f"{where}: highest score first, got them in another order (ask ZRANGE for the "
                                 "reverse order)")
        if len(got) == len(expected) + 1 and n < size:
            raise ExerciseFailed(f"{where}, got {len(got)}: ZRANGE's stop index is inclusive")
        if len(got) != len(expected):
            raise ExerciseFailed(f"{where}, got {len(got)} entries, expected {len(expected)}")
        raise ExerciseFailed(f"{where}: expected {expected}, got {got}: let Redis pick and order them "
                             "(among equal scores REV puts names in reverse order)")


# -- exercise 2: capped log ----------------------------------------------------------------------

def check_capped_log(client, solution) -> None:
    """Capped activity log

    `solution(client, log, entry, keep)` adds `entry` to the list `log` as its newest element
    (index 0) and keeps only the `keep` newest, newest first. The properties checked:

    - capped and ordered: after any number of calls the list holds the `keep` newest entries,
      newest first, equal entries included (a log is not a set); keep = 1 works too;
    - one atomic step, crash-safe: whichever round trip the learner's app server dies after, the
      log is as it was before the call or as it is after it, never longer than `keep` (which is
      also what a reader between a separate push and trim would see). A pipeline without
      MULTI/EXEC sends both commands at once but is not atomic: the server may run other
      clients' commands between them;
    - nothing lost to another app server: one that pushes its own entry right after any of the
      learner's commands on the log keeps it (its entry and the learner's are the two newest), and
      the log never exceeds `keep`, whether it was full or one short of full (a decision taken on
      a length read earlier is stale once another app server has pushed).
    """
    log = exercise_prefix(check_capped_log) + "log"
    keep = 5
    entries = ["login", "view", "search", "view", "buy", "logout", "login", "view", "view", "buy", "view", "logout"]
    with bounded(client) as adversary:  # a retry that never ends is stopped
        lengths = []
        for entry in entries:
            solution(adversary.client, log, entry, keep)
            lengths.append(client.llen(log))
        adversary.require_used()
        batches = adversary.batches
    if max(lengths) > keep:
        hint = ("one too many: the trim keeps one extra (LTRIM's stop index is inclusive) or runs before the push"
                if max(lengths) == keep + 1 else "trim the list on every call so it never holds more than `keep`")
        raise ExerciseFailed(f"with keep={keep}, {len(entries)} calls grew the log to {max(lengths)} entries: {hint}")
    expected = entries[::-1][:keep]
    stored = client.lrange(log, 0, -1)
    if stored != expected:
        if stored == expected[::-1]:
            raise ExerciseFailed("newest first: the entry added last must be at index 0")
        raise ExerciseFailed(f"after {len(entries)} calls with keep={keep} the log should hold {expected}, got {stored}")
    for batch in batches:
        if {"LPUSH", "RPUSH", "LPUSHX", "RPUSHX"} & set(batch) and "LTRIM" in batch and "MULTI" not in batch:
            raise ExerciseFailed("your push and trim travel in one pipeline without MULTI/EXEC: one round trip, "
                                 "but not atomic, other clients' commands may run between them")

    client.delete(log)
    solution(client, log, "only", 1)
    solution(client, log, "newest", 1)
    if client.lrange(log, 0, -1) != ["newest"]:
        raise ExerciseFailed(f"with keep=1 the log should hold only the newest entry, got {client.lrange(log, 0, -1)}")

    full = [f"old-{i}" for i in range(keep)]  # a full log, old-0 the newest
    after_call = ["mine"] + full[:keep - 1]

    def fill(size: int = keep) -> None:
        client.delete(log)
        client.rpush(log, *full[:size])

    def half_done() -> str | None:
        stored = client.lrange(log, 0, -1)
        if stored in (full, after_call):
            return None
        return f"left the log with {len(stored)} entries (keep={keep}), {stored}, neither as before the call nor as after it"

    every_crash(client, fill, lambda c: solution(c, log, "mine", keep), half_done, "adding to a full log")

    def their_entry(other) -> None:
        with other.pipeline(transaction=True) as pipe:  # the other app server adds its own entry, atomically
            pipe.lpush(log, "theirs")
            pipe.ltrim(log, 0, keep - 1)
            pipe.execute()

    def judge(at: int, _returned, _other) -> None:
        stored = client.lrange(log, 0, -1)
        if len(stored) > keep:
            raise ExerciseFailed(f"another app server added its entry right after your command number {at} on the "
                                 f"log, which then held {len(stored)} entries (keep={keep}): an order of commands, "
                                 "or a length read before writing, that is right alone can be wrong when other "
                                 "commands run between them")
        if sorted(stored[:2]) != ["mine", "theirs"] or stored[2:] != full[:keep - 2]:
            raise ExerciseFailed(f"another app server added its entry right after your command number {at} on the "
                                 f"log; the log should hold both new entries then the older ones, got {stored}: an "
                                 "entry pushed meanwhile was lost")

    for size in (keep, keep - 1):  # full, and one short of full: both pushes fit only if the trim follows them
        _interleavings(client, lambda: fill(size), lambda c: solution(c, log, "mine", keep), log, their_entry, judge)


# -- exercise 3: shopping cart -------------------------------------------------------------------

def check_add_to_cart(client, solution) -> None:
    """Shopping cart

    `solution(client, cart, item, quantity)` adds `quantity` of `item` to the cart hash (item ->
    quantity) and returns the item's new quantity as an int. The properties checked:

    - adds to what is there, leaving other items as they were;
    - atomic across app servers: another app server adding the same item right after any of the
      learner's commands on the cart loses nothing (a read, then a write of the sum, would
      overwrite its add; a lock in one process cannot stop another process);
    - validated: a quantity below 1 raises ValueError and changes nothing (removing items is
      another operation, and a cart must never hold 0 or fewer of an item);
    - returns an int: the quantity the learner's own add made, even when another app server adds
      right after it (a second read returns theirs too).
    """
    cart = exercise_prefix(check_add_to_cart) + "cart"
    client.hset(cart, "pear", 1)
    with bounded(client) as adversary:  # a retry that never ends is stopped
        for item, quantity, total in (("apple", 2, 2), ("apple", 3, 5), ("plum", 1, 1)):
            got = returned(solution(adversary.client, cart, item, quantity), int, "the item's new quantity as an int")
            stored = client.hget(cart, item)
            if stored != str(total):
                raise ExerciseFailed(f"adding {quantity} of {item!r} should make {total}, the cart holds {stored}: "
                                     "add to what is there, do not overwrite it")
            if got != total:
                raise ExerciseFailed(f"return the new quantity ({total} after adding {quantity} of {item!r}), got {got!r}")
        adversary.require_used()
    if client.hgetall(cart) != {"pear": "1", "apple": "5", "plum": "1"}:
        raise ExerciseFailed(f"other items must stay as they were, the cart is now {client.hgetall(cart)}")

    for quantity in (0, -2):
        try:
            solution(client, cart, "apple", quantity)
        except ValueError:
            pass
        else:
            raise ExerciseFailed(f"adding {quantity} apples was accepted: a quantity below 1 must raise ValueError")
        if client.hget(cart, "apple") != "5":
            raise ExerciseFailed(f"adding {quantity} apples raised ValueError but changed the cart: check first, "
                                 "then write")

    def fresh() -> None:
        client.delete(cart)
        client.hset(cart, mapping={"pear": 1, "fig": 4})

    def judge(at: int, got, theirs) -> None:
        figs = int(client.hget(cart, "fig") or 0)
        if figs == 4 + 10:
            raise ExerciseFailed(f"another app server added 10 figs right after your command number {at} on the "
                                 "cart, and your own add of 3 was dropped (the cart holds 14): when your write is "
                                 "refused because the cart changed, try again instead of giving up")
        if figs != 4 + 3 + 10:
            raise ExerciseFailed(f"another app server added 10 figs right after your command number {at} on the "
                                 f"cart, and you added 3 to the 4 there: expected 17, the cart holds {figs}. Reading "
                                 "the quantity and then writing the sum loses an add made in between")
        mine = 7 if theirs == 17 else 17  # their add answered 17: yours came first and made 7
        if returned(got, int, "the item's new quantity as an int") != mine:
            raise ExerciseFailed(f"you added 3 figs to 4 while another app server added 10 right after your command "
                                 f"number {at} on the cart, and you returned {got}: return the quantity your own add "
                                 f"made ({mine} here). A second read after the write sees other app servers' adds too")

    _interleavings(client, fresh, lambda c: solution(c, cart, "fig", 3), cart, lambda other: other.hincrby(cart, "fig", 10),
                   judge)
