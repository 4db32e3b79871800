"""Checkers for chapter 08's exercises (see `course_lib.exercises` for the pattern).

Both exercises move money: a deduction moves it from a balance to a spent total, a transfer from
one balance to another. Each checker plays, in turn:

- **the other app server** (`every_interleaving`): right after the learner's k-th command naming the
  balance, for every k, another connection moves money out of the same balance in one atomic step
  (`transactions_transfer.lua`), or deposits into the target; and once as **another request of the
  learner's own app server** (`shared`), on the pooled connection the learner's client hands out next,
  whose EXEC clears a WATCH left on that connection. The outcome must be what one of the
  two orders (the other app server first, or the learner first) would give: no overdraft, no money
  lost or created, no deduction refused that still fitted, and no balance another app server
  can see that the learner's function had not decided on;
- **the crash** (`every_crash`): the learner's app server dies after each of its round trips in turn;
  no money may be lost or created;
- **edges**: the exact balance, an amount of 0 or below, and (for the transfer) a target holding "n/a".

Keys written, all under `course:transactions:exercise:` (strings holding integers):
`{deduct}:balance|spent` for the deduction, `{bank}:alice|bob|carol` for the transfer.
`evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from course_lib import lua
from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary, every_crash, every_interleaving

ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}


def _short(name: str) -> str:
    return name.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class _Move:
    """Take `amount` from `source` and add it to `target`, only if `source` holds at least `amount`."""

    source: str
    target: str
    amount: int

    def model(self, state: dict[str, int]) -> tuple[bool, dict[str, int]]:
        if state[self.source] < self.amount:
            return False, state
        return True, {**state, self.source: state[self.source] - self.amount,
                      self.target: state[self.target] + self.amount}

    def run(self, other) -> tuple[bool, int]:
        """Done by the other app server, atomically: (moved, the source balance it read or left)."""
        moved, balance = lua.register(other, "transactions_transfer")(keys=[self.source, self.target],
                                                                       args=[self.amount])
        return bool(moved), int(balance)

    def run_on(self, connection) -> tuple[bool, int]:
        """The same move by a request sharing the learner's client, on the pooled connection it was handed.

        The script inside MULTI/EXEC: atomic, and its EXEC clears every WATCH of that connection.
        """
        for command in (("MULTI",), ("EVAL", lua.source("transactions_transfer"), 2, self.source, self.target,
                                     self.amount), ("EXEC",)):
            connection.send_command(*command)
            reply = connection.read_response()
        moved, balance = reply[0]
        return bool(moved), int(balance)

    def says(self, deduction: bool) -> str:
        if deduction:
            return f"deduct {self.amount} from the balance"
        return f"move {self.amount} from {_short(self.source)} to {_short(self.target)}"


@dataclass(frozen=True)
class _Deposit:
    """Add `amount` to `target` (money arriving from outside)."""

    target: str
    amount: int

    def model(self, state: dict[str, int]) -> tuple[bool, dict[str, int]]:
        return True, {**state, self.target: state[self.target] + self.amount}

    def run(self, other) -> tuple[bool, int]:
        return True, int(other.incrby(self.target, self.amount))

    def says(self, deduction: bool) -> str:
        return f"deposit {self.amount} into {_short(self.target)}"


def _state(client, names: list[str]) -> dict[str, int]:
    return {name: int(value or 0) for name, value in zip(names, client.mget(names))}


def _shown(state: dict[str, int]) -> str:
    return ", ".join(f"{_short(name)} {value}" for name, value in state.items())


def _answer(value) -> bool:
    return returned(value, bool, "True or False")


def _in_turn(client, solution: Callable, opening: dict[str, int], moves: list[_Move], deduction: bool) -> None:
    """Alone, one call after another: each returns what it should and leaves what it should."""
    names = list(opening)
    client.mset(opening)
    state = dict(opening)
    with Adversary(client) as adversary:
        for move in moves:
            ok, expected = move.model(state)
            got = _answer(solution(adversary.client, move.source, move.target, move.amount))
            after = _state(client, names)
            if got != ok or after != expected:
                raise ExerciseFailed(f"alone, from {_shown(state)}, asked to {move.says(deduction)}, your function "
                                     f"should return {ok} and leave {_shown(expected)}; it returned {got} and left "
                                     f"{_shown(after)}" + (" (a balance equal to the amount is enough)"
                                                           if state[move.source] == move.amount else ""))
            state = expected
    adversary.require_used()


def _refuses_bad_amounts(client, solution: Callable, opening: dict[str, int], source: str, target: str) -> None:
    for amount in (0, -5):
        client.mset(opening)
        try:
            got = solution(client, source, target, amount)
        except ValueError:
            got = False
        after = _state(client, list(opening))
        if got is not False or after != opening:
            raise ExerciseFailed(f"asked to move an amount of {amount}, your function returned {got!r:.40} and left "
                                 f"{_shown(after)}: an amount of 0 or below must be refused (return False or raise "
                                 "ValueError) with nothing written; a negative one would move money backwards")


def _against_the_other_app_server(client, solution: Callable, opening: dict[str, int], learner: _Move,
                                  other: _Move | _Deposit, follow: str, deduction: bool, shared: bool = False) -> None:
    """The other app server acts right after the learner's k-th command naming `follow`, for every k.

    With `shared`, it is another request of the learner's own app server instead, using the pooled
    connection the learner's client hands out next. The outcome must be one of the two serial
    orders: the other's move, then the learner's, or the learner's, then the other's.
    """
    names = list(opening)
    outcomes = []  # (learner's answer, other's answer, end state, state in between): other first, then learner first
    for other_first in (True, False):
        first, second = (other, learner) if other_first else (learner, other)
        ok_first, middle = first.model(opening)
        ok_second, final = second.model(middle)
        outcomes.append((ok_second, ok_first, final, middle) if other_first else (ok_first, ok_second, final, middle))
    total = sum(outcomes[0][2].values())
    acted: list[tuple[bool, int]] = []  # what the other app server's move did, in this run

    def setup() -> None:
        client.mset(opening)
        acted.clear()

    def act(other_client) -> None:
        acted.append(other.run_on(other_client) if shared else other.run(other_client))

    def judge(at: int, answer) -> None:
        got = _answer(answer)
        when = f"right after your function's {ORDINAL.get(at, f'{at}th')} command naming {_short(follow)}"
        if not acted:  # the learner's function named the key fewer times, or took no connection after: it acts last
            acted.append(other.run(client))
            when = "after your function returned"
        (other_ok, seen), state = acted[0], _state(client, names)
        if any((got, other_ok, state) == outcome[:3] for outcome in outcomes):
            return
        who = "another request of your own app server, handed the same pooled connection," if shared \
            else "another app server"
        when += f", {who} tried to {other.says(deduction)}"
        low = min(state, key=state.get)
        if state[low] < 0 and shared:
            raise ExerciseFailed(f"{when}; your function then wrote anyway and {_short(low)} ended at {state[low]}: "
                                 "a WATCH belongs to a connection, not to your function. Sent on the shared client, "
                                 "it stays on a pooled connection that the next request uses, and that request's "
                                 "EXEC clears it; a transaction needs a connection of its own from WATCH to EXEC")
        if state[low] < 0:
            raise ExerciseFailed(f"{when}; your function then wrote anyway and {_short(low)} ended at {state[low]}: "
                                 "the check and the writes were not one step on the server, and a lock in your "
                                 "process cannot stop another app server")
        if sum(state.values()) != total:
            raise ExerciseFailed(f"{when}; afterwards the accounts hold {sum(state.values())} in all instead of "
                                 f"{total} ({_shown(state)}): money was lost or created, a write based on a value "
                                 "read before the other app server's")
        if not got and all(outcome[0] for outcome in outcomes):
            left = outcomes[0][3][learner.source]
            raise ExerciseFailed(f"{when}; {_short(learner.source)} then held {left}, still enough for your "
                                 f"{learner.amount}, but your function returned False: an attempt aborted by a "
                                 "concurrent write means read again and try again, not give up")
        if not other_ok and all(outcome[1] for outcome in outcomes):
            raise ExerciseFailed(f"{when} and was refused, although {_short(learner.source)} never lacked the money "
                                 f"for it: it read {seen}, a balance your function had written before deciding. "
                                 "Another app server must never see a balance your function may still undo")
        raise ExerciseFailed(f"{when}; your function returned {got} and left {_shown(state)}; run one after the "
                             f"other, the two give {_shown(outcomes[0][2])} or {_shown(outcomes[1][2])}, your "
                             "function returning True only if it moved the money")

    every_interleaving(client, follow, setup, lambda learner_client: solution(
        learner_client, learner.source, learner.target, learner.amount), act, judge, shared=shared)


def _survives_crashes(client, solution: Callable, opening: dict[str, int], move: _Move, deduction: bool) -> None:
    names = list(opening)

    def invariant() -> str | None:
        state = _state(client, names)
        if sum(state.values()) != sum(opening.values()) or min(state.values()) < 0:
            return f"left {_shown(state)} (from {_shown(opening)})"
        return None

    every_crash(client, lambda: client.mset(opening),
                lambda crashing: solution(crashing, move.source, move.target, move.amount),
                invariant, f"asked to {move.says(deduction)}")


def _refuses_a_corrupt_target(client, solution: Callable, source: str, target: str) -> None:
    """The target holds "n/a": nothing may be written (EXEC and scripts do not roll back the source's DECRBY)."""
    client.mset({source: 50, target: "n/a"})
    try:
        got = solution(client, source, target, 10)
    except Exception:  # refusing by raising is fine, if nothing was written
        got = False
    left, there = client.mget([source, target])
    if left != "50" or there != "n/a":
        raise ExerciseFailed(f"with {_short(target)} holding 'n/a' (not a number), moving 10 from {_short(source)} left "
                             f"{_short(source)} {left} and {_short(target)} {there!r}: the money left and arrived "
                             "nowhere. Neither EXEC nor a script undoes a write when a later command fails: every "
                             "key the transfer writes must be known to hold an integer before its first write")
    if got is not False:
        raise ExerciseFailed(f"with {_short(target)} holding 'n/a', your function wrote nothing but returned {got!r:.40}: "
                             "return False (or raise) when the money did not move")


def check_deduct(client, solution) -> None:
    """A deduction that never overdraws

    `solution(client, balance, spent, amount)` deducts `amount` from the integer at key `balance` and
    adds it to the integer at key `spent`, both or neither, only if the balance is at least `amount`;
    returns True if it deducted, False if not. `amount` of 0 or below: return False (or raise
    ValueError) and write nothing. Several app servers deduct from the same balance at once, and
    other requests of your own app server share your client (and its pooled connections): a
    deduction by either may land between any two of your commands, and then yours must
    still end as if the two had run one after the other (never below zero, nothing lost, and not
    refused if the balance still covers it); another app server must never read a balance your
    function may still undo; and your app server may die between any two round trips without
    losing or creating money.
    """
    prefix = exercise_prefix(check_deduct)
    balance, spent = prefix + "{deduct}:balance", prefix + "{deduct}:spent"

    def move(amount: int) -> _Move:  # a deduction moves money from the balance to the spent total
        return _Move(balance, spent, amount)

    _in_turn(client, solution, {balance: 100, spent: 0},
             [move(30), move(80), move(70), move(1)], deduction=True)
    _refuses_bad_amounts(client, solution, {balance: 100, spent: 0}, balance, spent)
    for opening, mine, theirs in ((100, 80, 80), (100, 30, 30), (50, 80, 30)):
        _against_the_other_app_server(client, solution, {balance: opening, spent: 0}, move(mine), move(theirs),
                                      follow=balance, deduction=True)
    _against_the_other_app_server(client, solution, {balance: 100, spent: 0}, move(80), move(80),
                                  follow=balance, deduction=True, shared=True)
    for opening, amount in ((100, 30), (50, 80)):
        _survives_crashes(client, solution, {balance: opening, spent: 0}, move(amount), deduction=True)


def check_transfer(client, solution) -> None:
    """Transfers that conserve the total

    `solution(client, source, target, amount)` moves `amount` from the integer at key `source` to the
    integer at key `target`, both writes or neither, only if `source` holds at least `amount`;
    returns True if it moved the money, False if not. `amount` of 0 or below: return False (or raise
    ValueError) and write nothing; if `target` holds something other than an integer ("n/a"), write
    nothing either (return False or raise). Other app servers, and other requests of your own app
    server sharing your client, move money out of the same accounts, and into them, at the same
    moment: whatever lands between two of your commands, the result must be that
    of the two running one after the other (no balance below zero, no money lost or created, no
    transfer refused that the balance still covers); another app server must never read a balance
    your function may still undo; and your app server may die between any two round trips without
    losing or creating money.
    """
    prefix = exercise_prefix(check_transfer)
    alice, bob, carol = (prefix + "{bank}:" + name for name in ("alice", "bob", "carol"))

    def bank(a: int, b: int, c: int) -> dict[str, int]:
        return {alice: a, bob: b, carol: c}

    _in_turn(client, solution, bank(50, 0, 0),
             [_Move(alice, bob, 30), _Move(alice, carol, 30), _Move(alice, carol, 20)], deduction=False)
    _refuses_bad_amounts(client, solution, bank(50, 0, 0), alice, bob)
    for opening, mine, theirs in ((50, 40, 40), (50, 20, 20), (30, 50, 20)):
        _against_the_other_app_server(client, solution, bank(opening, 0, 0), _Move(alice, bob, mine),
                                      _Move(alice, carol, theirs), follow=alice, deduction=False)
    _against_the_other_app_server(client, solution, bank(50, 0, 0), _Move(alice, bob, 30), _Deposit(bob, 5),
                                  follow=bob, deduction=False)
    _against_the_other_app_server(client, solution, bank(50, 0, 0), _Move(alice, bob, 40), _Move(alice, carol, 40),
                                  follow=alice, deduction=False, shared=True)
    for opening, amount in ((50, 30), (30, 50)):
        _survives_crashes(client, solution, bank(opening, 0, 0), _Move(alice, bob, amount), deduction=False)
    _refuses_a_corrupt_target(client, solution, alice, bob)
