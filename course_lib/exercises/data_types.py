"""Checkers for chapter 01's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:data_types:exercise:`: `board` (sorted set), `log` (list),
`cart` (hash). `evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from course_lib.concurrency import StillRunning, run_together
from course_lib.exercises import ExerciseFailed, exercise_prefix

PLAYERS = {"ada": 120, "bob": 300, "cy": 90, "dee": 300, "eve": 250, "fay": 40, "gus": 180,
           "hal": 10, "ivy": 205, "jon": 60, "kim": 75, "lou": 150}


def _pairs(result) -> list[tuple[str, float]]:
    try:
        return [(str(member), float(score)) for member, score in result]
    except (TypeError, ValueError):
        raise ExerciseFailed(f"return a list of (player, score) pairs, got {result!r:.80}") from None


def check_top_scores(client, solution) -> None:
    """Top scores

    `solution(client, board, n)` returns the n best (player, score) pairs, highest score first.
    """
    board = exercise_prefix(check_top_scores) + "board"
    client.zadd(board, PLAYERS)
    for n in (3, 5, 20):
        expected = [(member, float(score)) for member, score in client.zrange(board, 0, n - 1, desc=True, withscores=True)]
        got = _pairs(solution(client, board, n))
        if got == expected:
            continue
        if sorted(got) == sorted(expected) and [s for _, s in got] == [s for _, s in expected]:
            raise ExerciseFailed("players with equal scores are out of order: Redis orders ties by name and REV "
                                 "reverses that too, so let ZRANGE ... REV do all the ordering")
        if sorted(got) == sorted(expected):
            raise ExerciseFailed("highest score first: ask ZRANGE for the reverse order (REV, `desc=True`)")
        if len(got) == len(expected) + 1 and n < len(PLAYERS):
            raise ExerciseFailed(f"asked for {n}, got {len(got)}: ZRANGE's stop index is inclusive, so stop at n - 1")
        if len(got) != len(expected):
            raise ExerciseFailed(f"asked for the top {n} of {len(PLAYERS)} players, got {len(got)} entries")
        raise ExerciseFailed(f"the top {n} should be {expected}, got {got}: let Redis pick and order them "
                             "(ZRANGE ... REV WITHSCORES; among equal scores REV puts names in reverse order)")


def check_capped_log(client, solution) -> None:
    """Capped activity log

    `solution(client, log, entry, keep)` adds `entry` as the newest and keeps only the newest `keep`.
    """
    log = exercise_prefix(check_capped_log) + "log"
    keep = 5
    pushes = 12
    lengths = []
    for i in range(pushes):
        solution(client, log, f"event-{i}", keep)
        lengths.append(client.llen(log))
    if max(lengths) > keep:
        hint = ("trim after pushing, to 0 .. keep - 1 (LTRIM's stop index is inclusive)" if max(lengths) == keep + 1
                else "trim the list after every push (LTRIM) so it never holds more than `keep`")
        raise ExerciseFailed(f"with keep={keep} the log grew to {max(lengths)} entries: {hint}")
    entries = client.lrange(log, 0, -1)
    expected = [f"event-{i}" for i in range(pushes - 1, pushes - 1 - keep, -1)]
    if entries == expected:
        return
    if entries == expected[::-1]:
        raise ExerciseFailed("newest first: push to the left (LPUSH) and read from index 0")
    raise ExerciseFailed(f"the log should hold the {keep} newest entries, newest first {expected}, got {entries}")


def check_add_to_cart(client, solution) -> None:
    """Shopping cart

    `solution(client, cart, item, quantity)` adds `quantity` of `item` to the cart hash, returns the new quantity.
    """
    cart = exercise_prefix(check_add_to_cart) + "cart"
    client.hset(cart, "pear", 1)
    steps = [("apple", 2, 2), ("apple", 3, 5), ("plum", 1, 1)]
    for item, quantity, total in steps:
        returned = solution(client, cart, item, quantity)
        stored = client.hget(cart, item)
        if stored != str(total):
            raise ExerciseFailed(f"adding {quantity} {item} should make {total}, the cart holds {stored}: "
                                 "add to what is there (HINCRBY), do not overwrite it")
        if returned is None or int(returned) != total:
            raise ExerciseFailed(f"return the new quantity ({total} after adding {quantity} {item}), got {returned!r}")
    if client.hgetall(cart) != {"pear": "1", "apple": "5", "plum": "1"}:
        raise ExerciseFailed(f"other items must stay as they were, the cart is now {client.hgetall(cart)}")

    threads, adds = 4, 100

    def shopper(_slot: int) -> None:
        for _ in range(adds):
            solution(client, cart, "fig", 1)

    try:
        run_together(shopper, threads, timeout=60, what="add_to_cart shoppers")
    except StillRunning:
        raise ExerciseFailed(f"{threads * adds} calls from {threads} threads took over a minute: "
                             "does your function block?") from None
    figs = int(client.hget(cart, "fig") or 0)
    if figs != threads * adds:
        raise ExerciseFailed(f"{threads} shoppers adding {adds} figs each left {figs}, not {threads * adds}: "
                             "reading then writing loses updates; HINCRBY adds atomically")
