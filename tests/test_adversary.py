"""The checkers' adversary on a real server: the other app server acts between two learner commands (and
not inside MULTI/EXEC or a script), the crash stops every later command, every_crash names the step,
and run_in_processes gives each app server its own process."""

import threading

import pytest
from redis.exceptions import WatchError

from course_lib.exercises import ExerciseFailed, returned
from course_lib.exercises.adversary import (Adversary, ProcessesFailed, SimulatedCrash, bounded, every_crash,
                                            every_interleaving, run_in_processes)
from course_lib.connection import connect

KEY = "course:adversary:{t}:balance"
OTHER = "course:adversary:{t}:spent"


def _write_changed(other):
    other.set(KEY, "changed")
    return "done"


def test_the_other_app_server_acts_right_after_the_first_command_naming_the_key(r):
    r.set(KEY, "before")
    with Adversary(r) as adversary:
        interference = adversary.after(KEY, _write_changed)
        assert adversary.client.get(OTHER) is None and not interference.fired  # another key: nothing yet
        assert adversary.client.get(KEY) == "before"  # the learner's read ran; then the other app server wrote
        assert interference.fired and interference.result == "done"
        assert adversary.client.get(KEY) == "changed"
        assert adversary.touches(KEY) == 1  # fired once only


def test_the_nth_command_naming_the_key_is_the_one_followed(r):
    r.set(KEY, 0)
    with Adversary(r) as adversary:
        adversary.after(KEY, lambda other: other.incrby(KEY, 100), at=2)
        assert [adversary.client.incr(KEY) for _ in range(3)] == [1, 2, 103]


def test_a_lock_in_the_learners_process_does_not_stop_it(r):
    r.set(KEY, 10)
    lock = threading.Lock()
    with Adversary(r) as adversary:
        adversary.after(KEY, lambda other: other.decrby(KEY, 7))
        with lock:
            have = int(adversary.client.get(KEY))
            adversary.client.decrby(KEY, have)  # checked 10, takes 10: the other app server took 7 in between
    assert int(r.get(KEY)) == -7


def test_watch_sees_it_and_a_retry_succeeds(r):
    r.set(KEY, 10)
    attempts = 0
    with Adversary(r) as adversary:
        adversary.after(KEY, lambda other: other.decrby(KEY, 1), at=2)  # after WATCH, the GET is the 2nd
        with adversary.client.pipeline() as pipe:
            while True:
                attempts += 1
                try:
                    pipe.watch(KEY)
                    have = int(pipe.get(KEY))
                    pipe.multi()
                    pipe.set(KEY, have - 5)
                    pipe.execute()
                    break
                except WatchError:
                    continue
    assert attempts == 2 and int(r.get(KEY)) == 4


def test_multi_exec_and_scripts_run_as_one_so_it_acts_only_after_them(r):
    r.set(KEY, 0)
    seen = []
    with Adversary(r) as adversary:
        adversary.after(KEY, lambda other: seen.append(int(other.get(KEY))))
        with adversary.client.pipeline(transaction=True) as pipe:
            pipe.incr(KEY).incr(KEY).execute()
        assert seen == [2] and adversary.batches == [["MULTI", "INCRBY", "INCRBY", "EXEC"]]
        adversary.after(KEY, lambda other: seen.append(int(other.get(KEY))))
        adversary.client.register_script("redis.call('INCR', KEYS[1]) return redis.call('INCR', KEYS[1])")(keys=[KEY])
    assert seen == [2, 4]


def test_an_exec_aborted_by_watch_ran_nothing(r):
    r.set(KEY, 1)
    with Adversary(r) as adversary:
        counted = adversary.after(KEY, lambda other: None, at=99)
        with adversary.client.pipeline() as pipe:
            pipe.watch(KEY)
            r.set(KEY, 2)  # somebody else writes: EXEC will be aborted
            pipe.multi()
            pipe.set(KEY, 3)
            with pytest.raises(WatchError):
                pipe.execute()
        assert counted.touches == 1  # the WATCH only; the queued SET never ran
    assert r.get(KEY) == "2"


def test_a_crash_stops_every_later_command(r):
    with Adversary(r, crash_after=1) as adversary:
        adversary.client.set(KEY, 1)
        with pytest.raises(SimulatedCrash):
            adversary.client.set(OTHER, 1)
        with pytest.raises(SimulatedCrash):
            adversary.client.get(KEY)
        assert adversary.crashed and adversary.round_trips == 1
    assert r.get(KEY) == "1" and r.get(OTHER) is None


def _two_step(client):
    client.incr(KEY)
    client.expire(KEY, 60)


def _one_transaction(client):
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(KEY).expire(KEY, 60).execute()


def _swallows_the_crash(client):
    try:
        _two_step(client)
    except BaseException:
        pass


def _no_ttl():
    client = connect()
    try:
        return "left the counter without a TTL" if client.ttl(KEY) == -1 else None
    finally:
        client.close()


def test_every_crash_names_the_step_that_a_crash_splits(r):
    with pytest.raises(ExerciseFailed, match=r"right after round trip 1 of 2 \(INCRBY\) and left the counter without"):
        every_crash(r, lambda: r.delete(KEY), _two_step, _no_ttl, "counting a request")
    assert every_crash(r, lambda: r.delete(KEY), _one_transaction, _no_ttl, "counting a request") == 1
    with pytest.raises(ExerciseFailed, match="caught the simulated crash"):
        every_crash(r, lambda: r.delete(KEY), _swallows_the_crash, lambda: None, "counting a request")


def test_a_function_that_ignores_its_client_is_told_so(r):
    with pytest.raises(ExerciseFailed, match="not the notebook's `r`"):
        every_crash(r, lambda: None, lambda client: r.incr(KEY), lambda: None, "counting")


def test_returned_says_what_was_expected():
    assert returned(True, bool, "True or False") is True
    with pytest.raises(ExerciseFailed, match="returned None; it must return True or False"):
        returned(None, bool, "True or False")
    with pytest.raises(ExerciseFailed, match="must return a dict, it returned list"):
        returned([], dict, "a dict")


LOCK = threading.Lock()


def _meet_inside_the_lock(slot):
    client = connect()
    try:
        with LOCK:  # one lock per process after the fork: both get in, and each sees the other arrive
            client.rpush(f"{KEY}:arrived:{1 - slot}", slot)
            return client.blpop([f"{KEY}:arrived:{slot}"], timeout=10) is not None
    finally:
        client.close()


def test_processes_each_have_their_own_in_process_lock(r):
    assert run_in_processes(_meet_inside_the_lock, processes=2, timeout=30) == [True, True]


def test_run_in_processes_reports_errors_and_kills_what_does_not_return():
    with pytest.raises(ProcessesFailed, match="ZeroDivisionError"):
        run_in_processes(lambda slot: 1 / slot, processes=2, timeout=30)
    with pytest.raises(ProcessesFailed, match="1 of 2 processes had not returned after 1 s"):
        run_in_processes(lambda slot: threading.Event().wait(60 * slot), processes=2, timeout=1)


def test_sent_lists_each_round_trips_commands_with_arguments_and_a_record_names_its_command(r):
    with Adversary(r) as adversary:
        interference = adversary.after(KEY, lambda other: None, at=2)
        adversary.client.set(KEY, 1)
        with adversary.client.pipeline(transaction=False) as pipe:
            pipe.mset({KEY: 2, OTHER: 3}).get(KEY).execute()
        assert adversary.sent == [[("SET", KEY, "1")], [("MSET", KEY, "2", OTHER, "3"), ("GET", KEY)]]
        assert interference.fired and interference.command == "MSET"


def test_bounded_stops_a_loop_that_never_ends_with_a_hint(r):
    def retries_for_ever(client):
        while True:
            try:
                client.incr(KEY)
            except Exception:  # a learner's broad except cannot swallow the stop
                continue

    with pytest.raises(ExerciseFailed, match="sent 50 round trips and had not returned"):
        with bounded(r, round_trips=50) as adversary:
            retries_for_ever(adversary.client)
    assert r.get(KEY) == "50"
    with bounded(r) as adversary:  # a call that ends is not stopped
        assert adversary.client.incr(KEY) == 51


def test_values_read_counts_the_values_in_the_replies_the_learner_read(r):
    r.zadd(KEY, {f"p{n}": n for n in range(12)})
    with Adversary(r) as adversary:
        adversary.client.zrange(KEY, 0, 2, withscores=True)  # 3 members, each with its score
        assert adversary.values_read == 6
        with adversary.client.pipeline(transaction=True) as pipe:
            pipe.zcard(KEY).zrange(KEY, 0, -1).execute()  # MULTI's and each QUEUED's OK, then EXEC's 1 + 12
        assert adversary.values_read == 6 + 3 + 13


def test_a_watching_pipeline_cut_by_the_crash_cleans_up_quietly(r, capfd):
    r.set(KEY, 5)
    with Adversary(r, crash_after=1) as adversary:
        with pytest.raises(SimulatedCrash):
            with adversary.client.pipeline() as pipe:
                pipe.watch(KEY)
                pipe.get(KEY)  # the crash: its UNWATCH on the way out must not raise again, nor print
        del pipe
    assert capfd.readouterr().err == ""


def test_every_interleaving_puts_the_other_app_server_after_each_command_in_turn(r):
    def setup():
        r.set(KEY, 0)

    def read_then_write(client):
        client.set(KEY, int(client.get(KEY)) + 1)

    def incr(client):
        client.incr(KEY)

    def other(other_client):
        other_client.incr(KEY)

    def judge(at, _result):
        if int(r.get(KEY)) != 2:
            raise ExerciseFailed(f"lost a request after command {at}")

    with pytest.raises(ExerciseFailed, match="lost a request after command 1"):
        every_interleaving(r, KEY, setup, read_then_write, other, judge)
    assert every_interleaving(r, KEY, setup, incr, other, judge) == 1
    with pytest.raises(ExerciseFailed, match="not the notebook's `r`"):
        every_interleaving(r, KEY, setup, lambda client: incr(r), other, judge)


def _deduct_on_the_connection(connection):
    for command in (("MULTI",), ("DECRBY", KEY, 8), ("EXEC",)):
        connection.send_command(*command)
        reply = connection.read_response()
    return reply


def test_a_request_sharing_the_client_clears_a_watch_sent_on_the_client_not_one_on_a_pipeline(r):
    r.set(KEY, 10)
    with Adversary(r) as adversary:
        shared = adversary.on_shared_connection(KEY, _deduct_on_the_connection, at=2)
        client = adversary.client
        client.execute_command("WATCH", KEY)  # the guide's way: WATCH on the shared client
        have = int(client.get(KEY))
        with client.pipeline() as pipe:  # takes the connection the other request has just used
            pipe.decrby(KEY, have).execute()  # not aborted: the other request's EXEC cleared the watch
        assert shared.fired and shared.result == [2] and adversary.round_trips == 3
    assert r.get(KEY) == "-8"
    r.set(KEY, 10)
    with Adversary(r) as adversary:
        shared = adversary.on_shared_connection(KEY, _deduct_on_the_connection, at=1)
        with adversary.client.pipeline() as pipe:
            pipe.watch(KEY)
            have = int(pipe.get(KEY))
            pipe.multi()
            pipe.decrby(KEY, have)
            pipe.execute()
        assert not shared.fired  # the pipeline kept its connection from WATCH to EXEC: no one else used it
    assert r.get(KEY) == "0"
