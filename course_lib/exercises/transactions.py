"""Checkers for chapter 08's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:transactions:exercise:` (strings holding integers):
`{deduct:<n>}:balance|spent` for the deduction, `{bank}:<name>` for the transfer's accounts.
`evaluate` deletes them before and after each check.
"""

from __future__ import annotations

import random

from course_lib.concurrency import StillRunning, run_together
from course_lib.exercises import ExerciseFailed, exercise_prefix

THREADS = 8


def _together(work, what: str) -> list:
    try:
        return run_together(work, THREADS, timeout=60, what=what)
    except StillRunning:
        raise ExerciseFailed(f"{THREADS} threads calling your function did not finish within a minute: "
                             "does it retry forever, or block?") from None


def check_deduct(client, solution) -> None:
    """A deduction that never overdraws

    `solution(client, balance, spent, amount)` deducts `amount` from the integer at key `balance` and
    adds it to the integer at key `spent`, both at once, only if the balance is at least `amount`;
    returns True if it deducted, False if not. Several app servers call it at the same moment.
    """
    prefix = exercise_prefix(check_deduct)
    balance, spent = prefix + "{deduct:0}:balance", prefix + "{deduct:0}:spent"
    client.mset({balance: 100, spent: 0})
    answers = [solution(client, balance, spent, 30), solution(client, balance, spent, 80)]
    state = [int(client.get(balance)), int(client.get(spent))]
    if [bool(a) for a in answers] != [True, False] or state != [70, 30]:
        raise ExerciseFailed(f"from a balance of 100, deducting 30 then 80 should return True, False and leave "
                             f"balance 70, spent 30; got {answers}, balance {state[0]}, spent {state[1]}")
    for n in range(1, 11):  # 8 threads x 2 deductions of 1 from a balance of 5: they all see room at once
        balance, spent = prefix + f"{{deduct:{n}}}:balance", prefix + f"{{deduct:{n}}}:spent"
        client.mset({balance: 5, spent: 0})
        answers = _together(lambda _slot: [bool(solution(client, balance, spent, 1)) for _ in range(2)],
                            "deduct exercise")
        left, total = int(client.get(balance)), int(client.get(spent))
        done = sum(map(sum, answers))
        if left < 0 or left + total != 5 or done != total:
            raise ExerciseFailed(f"{THREADS} threads deducting 1 at once from a balance of 5 left balance {left}, "
                                 f"spent {total}, and {done} calls returned True (expected 0, 5, 5): they all "
                                 "read the balance before anyone wrote. WATCH it on a pipeline, write in "
                                 "MULTI/EXEC, retry on WatchError (or do it all in one Lua script)")


def check_transfer(client, solution) -> None:
    """Transfers that conserve the total

    `solution(client, source, target, amount)` moves `amount` from the integer at key `source` to the
    integer at key `target`, only if `source` holds at least `amount`; returns True if it moved the
    money, False if not. Many transfers between the same accounts run at the same moment.
    """
    prefix = exercise_prefix(check_transfer)
    names = [prefix + "{bank}:" + name for name in ("alice", "bob", "carol")]
    client.mset({names[0]: 50, names[1]: 0, names[2]: 0})
    answers = [solution(client, names[0], names[1], 30), solution(client, names[0], names[2], 30)]
    state = [int(client.get(name)) for name in names]
    if [bool(a) for a in answers] != [True, False] or state != [20, 30, 0]:
        raise ExerciseFailed(f"alice 50, bob 0, carol 0: moving 30 alice->bob then 30 alice->carol should return "
                             f"True, False and leave [20, 30, 0]; got {answers} and {state}")
    for _ in range(5):  # 8 threads x 2 transfers of 1 from an account holding 5: they all see room at once
        client.mset({names[0]: 5, names[1]: 0})
        done = sum(map(sum, _together(lambda _slot: [bool(solution(client, names[0], names[1], 1)) for _ in range(2)],
                                      "transfer exercise")))
        state = [int(client.get(name)) for name in names[:2]]
        if state != [0, 5] or done != 5:
            raise ExerciseFailed(f"{THREADS} threads moving 1 at once from alice (5) to bob (0) ended at alice "
                                 f"{state[0]}, bob {state[1]}, with {done} calls returning True (expected 0, 5, 5): "
                                 "the balance was checked before another transfer's write. WATCH the source, "
                                 "move the money in one MULTI/EXEC, retry when EXEC is aborted")
    client.mset({name: 10 for name in names})

    def work(slot: int) -> int:
        rng = random.Random(slot)
        moved = 0
        for _ in range(30):
            source, target = rng.sample(names, 2)
            moved += bool(solution(client, source, target, rng.choice((1, 2, 3))))
        return moved

    moved = sum(_together(work, "transfer exercise"))
    state = [int(client.get(name)) for name in names]
    if sum(state) != 30 or min(state) < 0:
        raise ExerciseFailed(f"three accounts of 10 each, {THREADS} threads transferring at random between them: "
                             f"they ended at {state} (total {sum(state)}, expected 30, none below 0). "
                             "Money was created, destroyed or overdrawn: read under WATCH, move it in one "
                             "MULTI/EXEC, and retry when EXEC is aborted")
    if moved == 0:
        raise ExerciseFailed("no transfer succeeded while the accounts had money: return True when you move it")
