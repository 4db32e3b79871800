"""Chapter 08: the guide's deduction and its failures, `deduct`/`transfer` with bounded retries, Lua,
the race and contention experiments, the cluster rule (one slot), and the exercise checkers."""

import threading

import pandas as pd
import pytest
import redis
from redis.exceptions import WatchError
from redis.cluster import LoadBalancingStrategy
from redis.exceptions import RedisClusterException

from course_lib import lua
from course_lib.concurrency import wait_for
from course_lib.connection import connect, connect_cluster
from course_lib.exercises import evaluate
from course_lib.exercises import transactions as checkers
from course_lib.exercises.solutions import transactions as solutions
from course_lib.experiments import transactions as experiments
from course_lib.keys import key
from course_lib.pipelines import RoundTripCounter, command_calls
from course_lib.servers import find_binary, pid_alive, scratch_server
from course_lib.transactions import (LIBRARY, InsufficientFunds, NotABalance, Result, TooMuchContention, account_key,
                                     deduct, deduct_lua, guide_deduct_balance, load_library, open_account, total,
                                     transfer, transfer_lua, unwatched_deduct)


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


@pytest.mark.parametrize("operation", [transfer, transfer_lua], ids=["watch", "lua"])
def test_transfer_moves_refuses_and_validates(r, operation):
    a, b = "course:transactions:{bank:1}:a", "course:transactions:{bank:1}:b"
    r.mset({a: 50, b: 0})
    assert operation(r, a, b, 30) == Result(True, 20, 0)
    assert operation(r, a, b, 30) == Result(False, 20, 0)
    assert [int(r.get(a)), int(r.get(b))] == [20, 30]
    with pytest.raises(ValueError, match="same key"):
        operation(r, a, a, 1)
    with pytest.raises(ValueError, match="amount"):
        operation(r, a, b, 0)


# -- no rollback: neither MULTI/EXEC nor a script undoes the writes before a run-time error ----------------

A, B = "course:transactions:{bank:2}:a", "course:transactions:{bank:2}:b"
MOVE_UNCHECKED = "redis.call('DECRBY', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[2], ARGV[1])"


def test_a_transaction_into_a_non_integer_target_takes_the_money(r):
    r.mset({A: 50, B: "n/a"})
    with r.pipeline() as transaction:  # what `transfer` sent before it checked the target
        transaction.decrby(A, 10)
        transaction.incrby(B, 10)
        replies = transaction.execute(raise_on_error=False)
    assert replies[0] == 40 and isinstance(replies[1], redis.ResponseError)
    assert r.mget([A, B]) == ["40", "n/a"]  # 10 left the source and arrived nowhere


def test_a_script_does_not_roll_back_either(r):
    r.mset({A: 50, B: "n/a"})
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.eval(MOVE_UNCHECKED, 2, A, B, 10)
    assert r.mget([A, B]) == ["40", "n/a"]


@pytest.mark.parametrize("operation", [transfer, transfer_lua], ids=["watch", "lua"])
@pytest.mark.parametrize("corrupt", ["n/a", "1.5", " 7", "1234567890123456", "list"])
def test_transfer_checks_both_keys_first_and_writes_nothing(r, operation, corrupt):
    r.set(A, 50)
    if corrupt == "list":
        r.rpush(B, "x")
    else:
        r.set(B, corrupt)
    with pytest.raises(NotABalance):
        operation(r, A, B, 10)
    with pytest.raises(NotABalance):
        operation(r, B, A, 10)
    assert r.get(A) == "50"


@pytest.mark.parametrize("operation", [deduct, deduct_lua], ids=["watch", "lua"])
def test_deduct_checks_the_spent_total_first(r, operation):
    open_account(r, 11, 100)
    r.set(account_key(11, "spent"), "lots")
    with pytest.raises(NotABalance, match="spent"):
        operation(r, 11, 10)
    assert r.get(account_key(11, "balance")) == "100"


def test_cluster_needs_one_slot_then_works(rc):
    rc.set("course:transactions:bank:a", 5)
    with pytest.raises(RedisClusterException, match="same key slot"):  # untagged: WATCH of keys in two slots
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


def unwatched(client, account, amount, retries):
    """A degraded `deduct` for the experiments: the same read-check-write without WATCH."""
    return Result(unwatched_deduct(client, account, amount), 0, 0)


def test_race_verdicts_hold_and_fail_without_contention_or_without_watch(r, monkeypatch):
    assert all(experiments.race_verdicts(experiments.run_race(r, rounds=10)).values())
    alone = experiments.race_verdicts(experiments.run_race(r, rounds=3, threads=1))  # no race to see
    assert not alone["the guide's read-check-write without WATCH overdraws or loses updates"]
    assert not alone["some transactions were retried"]
    monkeypatch.setattr(experiments, "deduct", unwatched)
    broken = experiments.race_verdicts(experiments.run_race(r, rounds=10))
    assert not broken["WATCH/MULTI never overdraws and the total balance is conserved"]


def test_contention_verdicts_hold_and_fail_in_degraded_settings(r, monkeypatch):
    assert all(experiments.contention_verdicts(experiments.run_contention(r, threads=8, per_thread=25)).values())
    alone = experiments.contention_verdicts(experiments.run_contention(r, threads=1, per_thread=25))
    assert not alone["under contention WATCH aborted at least one attempt per two deductions"]
    no_retries = experiments.contention_verdicts(experiments.run_contention(r, threads=8, per_thread=25, retries=0))
    assert not no_retries["both completed all the work and conserved the balance"]
    monkeypatch.setattr(experiments, "deduct_lua", lambda client, account, amount: deduct(client, account, amount,
                                                                                            retries=1000))
    no_script = pd.concat([experiments.run_contention(r, threads=8, per_thread=25) for _ in range(3)])
    claim = "Lua completes the same work at least 3x faster than WATCH retries"
    assert not experiments.contention_verdicts(no_script)[claim]


def test_widget_starts_in_a_fixed_state(r):
    widget = experiments.contention_widget(r)
    (threads, retries, run), status = widget.children[0].children, widget.children[1]
    assert status.value.startswith("Choose threads and retries")
    threads.value, retries.value = 2, 5
    run.click()
    assert status.value == "2 threads x 50 deductions of 1 from one account, retries=5"


# -- DISCARD and UNWATCH, functions, read-only scripts, a busy script -----------------------------------

def test_discard_runs_nothing_and_unwatch_lets_the_next_exec_run(r):
    counter = key("transactions", "test", "counter")
    r.set(counter, 1)
    one = connect(single_connection_client=True)
    one.execute_command("MULTI")
    one.execute_command("INCR", counter)
    one.execute_command("DISCARD")
    assert r.get(counter) == "1"
    replies = {}
    for unwatch in (False, True):
        one.execute_command("WATCH", counter)
        r.incr(counter)  # another client changes the watched key
        if unwatch:
            one.execute_command("UNWATCH")
        one.execute_command("MULTI")
        one.execute_command("INCR", counter)
        replies[unwatch] = one.execute_command("EXEC")
    one.close()
    assert replies == {False: None, True: [4]}


def test_a_refused_deduct_sends_unwatch_before_its_connection_goes_back(r):
    open_account(r, "unwatch", 5)
    counter = RoundTripCounter(r)
    assert deduct(counter.client, "unwatch", 10) == Result(False, 5, 0)
    assert counter.commands == {"WATCH": 1, "GET": 2, "UNWATCH": 1}  # no MULTI, no EXEC
    counter.close()


def test_library_total_is_read_only_and_checks_its_keys(r):
    alice, bob = key("transactions", "{bank:9}", "alice"), key("transactions", "{bank:9}", "bob")
    r.function_delete(LIBRARY) if r.function_list(library=LIBRARY) else None
    with pytest.raises(redis.ResponseError, match="[Ff]unction not found"):
        total(r, alice)
    try:
        assert load_library(r) == LIBRARY and load_library(r) == LIBRARY  # REPLACE: loading twice is fine
        r.mset({alice: 30, bob: -5})
        assert total(r, alice, bob, key("transactions", "{bank:9}", "nobody")) == 25
        r.set(bob, "n/a")
        with pytest.raises(NotABalance, match="does not hold an integer"):
            total(r, alice, bob)
    finally:
        r.function_delete(LIBRARY)


def test_eval_ro_refuses_a_script_that_writes(r):
    alice, bob = key("transactions", "{bank:9}", "alice"), key("transactions", "{bank:9}", "bob")
    r.mset({alice: 30, bob: 0})
    with pytest.raises(redis.ResponseError, match="Write commands are not allowed from read-only scripts"):
        r.eval_ro(lua.source("transactions_transfer"), 2, alice, bob, 10)
    assert r.mget(alice, bob) == ["30", "0"]
    assert r.eval_ro("return redis.call('GET', KEYS[1])", 1, alice) == "30"


def test_a_cluster_client_reading_from_replicas_sends_eval_ro_to_a_replica_and_eval_to_the_primary(rc):
    balance = key("transactions", "{bank:9}", "alice")
    rc.set(balance, 30)
    primary = rc.get_redis_connection(rc.get_node_from_key(balance))
    replica = rc.get_redis_connection(rc.get_node_from_key(balance, replica=True))
    readers = connect_cluster(load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS)
    read = "return redis.call('GET', KEYS[1])"
    wait_for(lambda: readers.eval_ro(read, 1, balance) == "30", 5, "the replica to have the balance")
    for command, where in (("eval", primary), ("eval_ro", replica)):
        before = command_calls(primary, command), command_calls(replica, command)
        assert [getattr(readers, command)(read, 1, balance) for _ in range(3)] == ["30"] * 3
        ran = command_calls(primary, command) - before[0], command_calls(replica, command) - before[1]
        assert ran == ((3, 0) if where is primary else (0, 3)), command
    readers.close()


def test_restart_keeps_the_library_not_the_script_cache_and_the_verdicts_hold():
    frame = experiments.run_restart()
    assert all(experiments.restart_verdicts(frame).values())
    assert frame["balances"].tolist() == [["20", "30"], ["10", "40"]] and frame["total"].tolist() == [50, 50]
    assert not pid_alive(frame.attrs["server_pid"])


def test_restart_without_saving_loses_the_library_too():
    frame = experiments.run_restart(save=False)
    verdicts = experiments.restart_verdicts(frame)
    assert not verdicts["the function library survived the restart"]
    assert frame.iloc[1]["balances"] == [None, None] and frame.iloc[1]["total"] is None
    assert not pid_alive(frame.attrs["server_pid"])


def test_restart_moves_the_scratch_servers_pid_so_it_is_stopped_on_exit():
    binary = find_binary()
    with scratch_server(binary=binary) as server:
        first = server.pid
        experiments.restart(server, binary)
        assert server.pid != first and not pid_alive(first) and server.client().ping()
    assert not pid_alive(server.pid)


def test_busy_script_blocks_ping_and_script_kill_ends_it():
    frame = experiments.run_busy_script()
    assert all(experiments.busy_verdicts(frame).values())
    assert frame["reply"].tolist() == ["BUSY", "OK", "Script killed by user with SCRIPT KILL", "PONG"]
    assert not pid_alive(frame.attrs["server_pid"])


def test_busy_verdicts_fail_for_a_short_script_and_a_script_that_wrote():
    short = experiments.run_busy_script(passes=1000)
    assert not any(experiments.busy_verdicts(short).values())
    assert short["reply"].tolist() == ["PONG", "returned", "PONG"]
    wrote = experiments.run_busy_script(write=True)
    verdicts = experiments.busy_verdicts(wrote)
    assert not verdicts["SCRIPT KILL ended the script and the server answered PING again"]
    assert wrote["reply"].tolist() == ["BUSY", "UNKILLABLE", "server stopped", "connection closed"]
    assert not pid_alive(wrote.attrs["server_pid"])


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


# The wrong answers below take money from `source` to `target`: a deduction is a transfer from the
# balance to the spent total, so each serves both checkers.

LOCK = threading.Lock()


def read_then_write(client, source, target, amount):
    if amount <= 0 or int(client.get(source) or 0) < amount:
        return False
    client.decrby(source, amount)
    client.incrby(target, amount)
    return True


def locked_read_then_write(client, source, target, amount):
    with LOCK:  # one lock per process: another app server does not take it
        return read_then_write(client, source, target, amount)


def read_then_set(client, source, target, amount):
    have, other = int(client.get(source) or 0), int(client.get(target) or 0)
    if amount <= 0 or have < amount:
        return False
    client.mset({source: have - amount, target: other + amount})
    return True


def gives_up_on_watch_error(client, source, target, amount):
    if amount <= 0:
        return False
    with client.pipeline() as pipe:
        try:
            pipe.watch(source)
            if int(pipe.get(source) or 0) < amount:
                return False
            pipe.multi()
            pipe.decrby(source, amount)
            pipe.incrby(target, amount)
            pipe.execute()
            return True
        except WatchError:
            return False


def takes_then_gives_back(client, source, target, amount):
    """DECRBY first, INCRBY it back if the balance went negative: another app server sees the dip."""
    if amount <= 0:
        return False
    if client.decrby(source, amount) < 0:
        client.incrby(source, amount)
        return False
    client.incrby(target, amount)
    return True


def watch_on_the_shared_client(client, source, target, amount):
    """The guide's WATCH, sent on the shared client, with the retry loop it leaves out."""
    if amount <= 0:
        return False
    while True:
        client.execute_command("WATCH", source)
        if int(client.get(source) or 0) < amount:
            client.execute_command("UNWATCH")
            return False
        try:
            with client.pipeline() as transaction:
                transaction.decrby(source, amount)
                transaction.incrby(target, amount)
                transaction.execute()
            return True
        except WatchError:
            continue


TAKE = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') if n < tonumber(ARGV[1]) then return 0 end " \
       "redis.call('DECRBY', KEYS[1], ARGV[1]) return 1"


def script_then_separate_write(client, source, target, amount):
    """Checks and takes atomically, then adds in a second round trip: a crash in between loses the money."""
    if amount <= 0 or not client.register_script(TAKE)(keys=[source], args=[amount]):
        return False
    client.incrby(target, amount)
    return True


def no_amount_check(client, source, target, amount):
    return client.transaction(lambda pipe: _move(pipe, source, target, amount), source, value_from_callable=True)


def _move(pipe, source, target, amount):
    if int(pipe.get(source) or 0) < amount:
        return False
    pipe.multi()
    pipe.decrby(source, amount)
    pipe.incrby(target, amount)
    return True


def needs_more_than_the_amount(client, source, target, amount):
    """Refuses a balance equal to the amount: `<=` where `<` was meant."""
    if amount <= 0:
        return False

    def move(pipe):
        if int(pipe.get(source) or 0) <= amount:
            return False
        pipe.multi()
        pipe.decrby(source, amount)
        pipe.incrby(target, amount)
        return True

    return client.transaction(move, source, value_from_callable=True)


def returns_nothing(client, source, target, amount):
    solutions.transfer(client, source, target, amount)


COMMON_WRONG = [
    (read_then_write, "ended at -60"),
    (locked_read_then_write, "a lock in your process cannot stop another app server"),
    (gives_up_on_watch_error, "not give up"),
    (takes_then_gives_back, "a balance your function had written before deciding"),
    (script_then_separate_write, "the app server died right after round trip 1 of 2 (EVALSHA)"),
    (no_amount_check, "an amount of 0 or below must be refused"),
    (needs_more_than_the_amount, "(a balance equal to the amount is enough)"),
    (returns_nothing, "returned None; it must return True or False"),
    (watch_on_the_shared_client, "a WATCH belongs to a connection, not to your function"),
]


def forgets_spent(client, balance, spent, amount):
    return solutions.deduct(client, balance, "course:transactions:exercise:{deduct}:elsewhere", amount)


@pytest.mark.parametrize("wrong, hint", COMMON_WRONG + [
    (read_then_set, "money was lost or created"),
    (forgets_spent, "should return True and leave balance 70, spent 30"),
])
def test_deduct_checker_fails_wrong_answers_with_their_hint(r, wrong, hint):
    outcome = evaluate(checkers.check_deduct, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def unchecked_target(client, source, target, amount):
    """Right but for one thing: it never looks at the target, so an INCRBY failing at EXEC loses the money."""
    if amount <= 0:
        return False
    return client.transaction(lambda pipe: _move(pipe, source, target, amount), source, value_from_callable=True)


def only_takes(client, source, target, amount):
    return solutions.deduct(client, source, "course:transactions:exercise:{bank}:nowhere", amount)


def sets_the_target_from_a_read(client, source, target, amount):
    """Watches the source only, then SETs the target from a value read before: a deposit in between is lost."""
    if amount <= 0:
        return False
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(source)
                have, other = int(pipe.get(source) or 0), int(pipe.get(target) or 0)
                if have < amount:
                    return False
                pipe.multi()
                pipe.decrby(source, amount)
                pipe.set(target, other + amount)
                pipe.execute()
                return True
            except WatchError:
                continue


@pytest.mark.parametrize("wrong, hint", [(w, h.replace("-60", "-30")) for w, h in COMMON_WRONG] + [
    (read_then_set, "money was lost or created"),
    (only_takes, "should return True and leave alice 20, bob 30, carol 0"),
    (sets_the_target_from_a_read, "another app server tried to deposit 5 into bob; afterwards the accounts hold 50"),
    (unchecked_target, "with bob holding 'n/a' (not a number), moving 10 from alice left alice 40"),
])
def test_transfer_checker_fails_wrong_answers_with_their_hint(r, wrong, hint):
    outcome = evaluate(checkers.check_transfer, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def test_checkers_say_when_the_notebooks_r_was_used(r):
    for checker, solution in ((checkers.check_deduct, solutions.deduct), (checkers.check_transfer, solutions.transfer)):
        outcome = evaluate(checker, r, lambda client, *args, solution=solution: solution(r, *args))
        assert outcome.status == "failed" and "not the notebook's `r`" in outcome.hint


MOVE = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') local a = tonumber(ARGV[1]) " \
       "if not string.match(redis.call('GET', KEYS[2]) or '0', '^-?%d+$') then return redis.error_reply('NaN') end " \
       "if a <= 0 or n < a then return 0 end " \
       "redis.call('DECRBY', KEYS[1], a) redis.call('INCRBY', KEYS[2], a) return 1"


def in_one_script(client, source, target, amount):
    """Unusual but right: one Lua script checks the amount and the balance and writes both."""
    return bool(client.register_script(MOVE)(keys=[source, target], args=[amount]))


def bounded_retries(client, source, target, amount, retries=3):
    """Unusual but right: WATCH with at most 3 retries, raising (nothing written) when they run out."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    for _ in range(1 + retries):
        with client.pipeline() as pipe:
            try:
                pipe.watch(source, target)
                have, _ = int(pipe.get(source) or 0), int(pipe.get(target) or 0)
                if have < amount:
                    return False
                pipe.multi()
                pipe.decrby(source, amount)
                pipe.incrby(target, amount)
                pipe.execute()
                return True
            except WatchError:
                continue
    raise RuntimeError("too much contention")


@pytest.mark.parametrize("checker", [checkers.check_deduct, checkers.check_transfer], ids=["deduct", "transfer"])
@pytest.mark.parametrize("right", [in_one_script, bounded_retries, solutions.transfer, solutions.deduct])
def test_checkers_pass_unusual_right_answers(r, checker, right):
    assert evaluate(checker, r, right).passed
