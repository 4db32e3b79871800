"""Chapter 08: the guide's deduction and its failures, `deduct`/`transfer` with bounded retries, Lua,
the race and contention experiments, the cluster rule (one slot), and the exercise checkers."""

import pytest
import redis
from redis.exceptions import RedisClusterException

from course_lib.connection import connect
from course_lib.exercises import evaluate
from course_lib.exercises import transactions as checkers
from course_lib.exercises.solutions import transactions as solutions
from course_lib.experiments import transactions as experiments
from course_lib.transactions import (InsufficientFunds, Result, TooMuchContention, account_key, deduct, deduct_lua,
                                     guide_deduct_balance, open_account, transfer, unwatched_deduct)


def state(client, account):
    return int(client.get(account_key(account, "balance"))), int(client.get(account_key(account, "spent")))


def once(action):
    """A `between` hook that runs `action` on its first call only."""
    calls = []

    def hook():
        if not calls:
            calls.append(action())
    return hook


def test_account_keys_share_one_hash_tag(r):
    assert account_key(42, "balance") == "course:transactions:{account:42}:balance"
    open_account(r, 42, 100)
    assert state(r, 42) == (100, 0)


# -- the guide's version -----------------------------------------------------------------------------

def test_guide_deduct_works_alone_and_refuses_an_overdraft(r):
    open_account(r, 1, 100)
    assert guide_deduct_balance(r, 1, 30) == [70, 30]
    with pytest.raises(InsufficientFunds):
        guide_deduct_balance(r, 1, 80)
    assert state(r, 1) == (70, 30)


def test_guide_deduct_overdraws_when_another_caller_commits_on_its_connection():
    """The inner call reuses the pooled connection holding the outer WATCH; its EXEC clears that watch."""
    client = connect()  # its own pool: the stray WATCH the guide leaves must not reach other tests
    try:
        open_account(client, 2, 100)
        guide_deduct_balance(client, 2, 80, between=lambda: guide_deduct_balance(client, 2, 80))
        assert state(client, 2) == (-60, 160)
    finally:
        client.close()


def test_redis_py_plain_client_watch_sends_nothing(r):
    with pytest.warns(DeprecationWarning, match="Pipeline"):
        assert r.watch(account_key(3, "balance")) is None


def test_unwatched_deduct_checks_then_writes(r):
    open_account(r, 4, 10)
    assert unwatched_deduct(r, 4, 6) and not unwatched_deduct(r, 4, 6)
    assert state(r, 4) == (4, 6)


# -- the course's version -----------------------------------------------------------------------------

@pytest.mark.parametrize("operation", [deduct, deduct_lua], ids=["watch", "lua"])
def test_deduct_and_refuse(r, operation):
    open_account(r, 5, 100)
    assert operation(r, 5, 30) == Result(True, 70, 0)
    assert operation(r, 5, 80) == Result(False, 70, 0)
    assert operation(r, "nobody", 1) == Result(False, 0, 0)
    assert state(r, 5) == (70, 30)


@pytest.mark.parametrize("operation", [deduct, deduct_lua], ids=["watch", "lua"])
@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "3"])
def test_deduct_refuses_invalid_amounts(r, operation, amount):
    with pytest.raises(ValueError, match="amount"):
        operation(r, 5, amount)


def test_deduct_retries_when_another_caller_commits_in_between(r):
    open_account(r, 6, 100)
    result = deduct(r, 6, 80, between=once(lambda: deduct(r, 6, 80)))
    assert result == Result(False, 20, 1)  # aborted once, then read 20: refused, no overdraft
    assert state(r, 6) == (20, 80)


def test_deduct_gives_up_after_its_retries_with_nothing_written(r):
    open_account(r, 7, 100)
    with pytest.raises(TooMuchContention, match="3 attempts"):
        deduct(r, 7, 10, retries=2, between=lambda: r.incr(account_key(7, "balance")))
    assert state(r, 7) == (103, 0)


def test_transfer_moves_refuses_and_validates(r):
    a, b = "course:transactions:{bank:1}:a", "course:transactions:{bank:1}:b"
    r.mset({a: 50, b: 0})
    assert transfer(r, a, b, 30) == Result(True, 20, 0)
    assert transfer(r, a, b, 30) == Result(False, 20, 0)
    assert [int(r.get(a)), int(r.get(b))] == [20, 30]
    with pytest.raises(ValueError, match="same key"):
        transfer(r, a, a, 1)
    with pytest.raises(ValueError, match="amount"):
        transfer(r, a, b, 0)


def test_cluster_needs_one_slot_then_works(rc):
    rc.set("course:transactions:bank:a", 5)
    with pytest.raises(RedisClusterException, match="same slot"):  # untagged: the keys live in different slots
        transfer(rc, "course:transactions:bank:a", "course:transactions:bank:b", 1)
    with pytest.raises(redis.exceptions.ClusterCrossSlotError):
        src, dst = "course:transactions:bank:a", "course:transactions:bank:b"
        rc.execute_command("EVAL", "return 1", 2, src, dst, target_nodes=rc.get_node_from_key(src))
    a, b = "course:transactions:{bank:1}:a", "course:transactions:{bank:1}:b"
    rc.mset({a: 5, b: 0})
    assert transfer(rc, a, b, 3) == Result(True, 2, 0)
    open_account(rc, 8, 10)
    assert deduct(rc, 8, 4).balance == 6 and deduct_lua(rc, 8, 4).balance == 2
    assert state(rc, 8) == (2, 8)


# -- experiments -------------------------------------------------------------------------------------------

def test_race_overdraws_only_without_watch(r):
    rows = experiments.run_race(r, rounds=10).set_index("contender")
    assert rows.loc[experiments.UNWATCHED, "rounds_overdrawn"] > 0
    for safe in (experiments.WATCHED, experiments.LUA):
        assert rows.loc[safe, "rounds_overdrawn"] == rows.loc[safe, "rounds_not_conserved"] == 0
        assert rows.loc[safe, "lowest_balance"] == 0
    assert rows.loc[experiments.WATCHED, "retries"] > 0 and rows.loc[experiments.LUA, "retries"] == 0
    assert not list(r.scan_iter(match="course:transactions:*"))


def test_contention_completes_the_same_work_and_a_small_retry_budget_gives_up(r):
    rows = experiments.run_contention(r, threads=4, per_thread=25).set_index("contender")
    assert list(rows["deducted"]) == [100, 100] and rows["conserved"].all()
    tight = experiments.run_contention(r, threads=8, per_thread=25, retries=0,
                                       contenders=(experiments.WATCHED,)).iloc[0]
    assert tight["gave_up"] > 0 and tight["deducted"] + tight["gave_up"] == 200 and tight["conserved"]


def test_widget_starts_in_a_fixed_state(r):
    widget = experiments.contention_widget(r)
    (threads, retries, run), status = widget.children[0].children, widget.children[1]
    assert status.value.startswith("Choose threads and retries")
    threads.value, retries.value = 2, 5
    run.click()
    assert status.value == "2 threads x 50 deductions of 1 from one account, retries=5"


# -- exercises ----------------------------------------------------------------------------------------------

def test_reference_solutions_pass(r):
    assert evaluate(checkers.check_deduct, r, solutions.deduct).passed
    assert evaluate(checkers.check_transfer, r, solutions.transfer).passed
    assert not list(r.scan_iter(match="course:transactions:exercise:*"))


def test_stubs_are_not_solved_yet(r):
    def stub(*_args):
        raise NotImplementedError

    for checker in (checkers.check_deduct, checkers.check_transfer):
        assert evaluate(checker, r, stub).status == "not solved yet"


def read_then_write(client, balance, spent, amount):
    if int(client.get(balance)) < amount:
        return False
    client.decrby(balance, amount)
    client.incrby(spent, amount)
    return True


def read_then_set(client, balance, spent, amount):
    current = int(client.get(balance))
    if current < amount:
        return False
    client.set(balance, current - amount)
    client.incrby(spent, amount)
    return True


def forgets_spent(client, balance, spent, amount):
    return solutions.deduct(client, balance, "course:transactions:exercise:{deduct:0}:elsewhere", amount)


@pytest.mark.parametrize("wrong", [read_then_write, read_then_set, forgets_spent])
def test_deduct_checker_fails_wrong_answers(r, wrong):
    outcome = evaluate(checkers.check_deduct, r, wrong)
    assert outcome.status == "failed", outcome


def transfer_read_then_set(client, source, target, amount):
    have, other = int(client.get(source)), int(client.get(target))
    if have < amount:
        return False
    client.mset({source: have - amount, target: other + amount})
    return True


def transfer_only_takes(client, source, target, amount):
    with client.pipeline() as pipe:
        pipe.watch(source)
        if int(pipe.get(source)) < amount:
            return False
        pipe.multi()
        pipe.decrby(source, amount)
        pipe.execute()
    return True


def transfer_unwatched_multi(client, source, target, amount):
    if int(client.get(source)) < amount:
        return False
    with client.pipeline() as pipe:
        pipe.decrby(source, amount)
        pipe.incrby(target, amount)
        pipe.execute()
    return True


@pytest.mark.parametrize("wrong", [transfer_read_then_set, transfer_only_takes, transfer_unwatched_multi])
def test_transfer_checker_fails_wrong_answers(r, wrong):
    outcome = evaluate(checkers.check_transfer, r, wrong)
    assert outcome.status == "failed", outcome
