"""Chapter 04: streams, consumer groups, crash recovery and dead letters, against real servers."""

import time

import pytest
import redis
from redis.exceptions import ResponseError

from course_lib import streams
from course_lib.concurrency import TimedOut, run_together, wait_for
from course_lib.connection import connect
from course_lib.exercises import ExerciseFailed, evaluate
from course_lib.exercises.adversary import every_crash
from course_lib.exercises import streams as checkers
from course_lib.exercises.solutions import streams as reference
from course_lib.experiments import streams as experiments
from course_lib.keys import delete_prefix, key
from course_lib.pipelines import RoundTripCounter

STREAM = key("streams", "{orders}")
DEAD = key("streams", "{orders}", "dead")


def _fill(client, n, stream=STREAM):
    return [client.xadd(stream, {"order": str(i)}) for i in range(n)]


def _fail_on(*orders):
    def handler(entry_id, fields):
        if fields["order"] in orders:
            raise RuntimeError(f"cannot handle order {fields['order']}")
    return handler


def test_entries_flattens_resp2_and_resp3_replies(r):
    ids = _fill(r, 3)
    resp2 = connect(protocol=2)
    try:
        for client in (r, resp2):
            assert [entry_id for entry_id, _ in streams.entries(client.xread({STREAM: "0"}, count=10))] == ids
            assert streams.entries(client.xread({STREAM: ids[-1]}, count=10)) == []
        streams.ensure_group(resp2, STREAM, "g")
        assert streams.process_new(resp2, STREAM, "g", "c", lambda i, f: None) == 3
    finally:
        resp2.close()


def test_guide_group_creation_fails_the_second_time_and_skips_older_entries(r):
    _fill(r, 2)
    streams.guide_create_group(r, STREAM, "mailer")
    with pytest.raises(ResponseError, match="BUSYGROUP"):
        streams.guide_create_group(r, STREAM, "mailer")
    assert r.xreadgroup("mailer", "c", {STREAM: ">"}, count=10) in (None, {}, [])


def test_ensure_group_is_idempotent_and_reraises_other_errors(r):
    assert streams.ensure_group(r, STREAM, "mailer") is True
    assert r.type(STREAM) == "stream" and r.xlen(STREAM) == 0
    assert streams.ensure_group(r, STREAM, "mailer") is False
    r.set(key("streams", "string"), "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        streams.ensure_group(r, key("streams", "string"), "mailer")


def test_append_keeps_the_stream_near_maxlen(r):
    for n in range(1000):
        streams.append(r, STREAM, {"n": n}, maxlen=100)
    assert 100 <= r.xlen(STREAM) < 1000


def test_two_consumers_share_the_work_each_entry_once(r):
    streams.ensure_group(r, STREAM, "mailer")
    _fill(r, 10)
    seen = {"a": [], "b": []}
    for consumer in ("a", "b", "a", "b"):
        streams.process_new(r, STREAM, "mailer", consumer, lambda i, f, c=consumer: seen[c].append(f["order"]),
                            count=3, block_ms=None)
    assert sorted(seen["a"] + seen["b"], key=int) == [str(i) for i in range(10)]
    assert len(seen["a"]) == 6 and len(seen["b"]) == 4
    assert r.xpending(STREAM, "mailer")["pending"] == 0


def test_process_new_leaves_a_failed_entry_pending(r):
    streams.ensure_group(r, STREAM, "mailer")
    ids = _fill(r, 3)
    assert streams.process_new(r, STREAM, "mailer", "a", _fail_on("1"), block_ms=None) == 2
    summary = r.xpending(STREAM, "mailer")
    assert summary["pending"] == 1 and summary["min"] == ids[1]


def test_a_blocking_read_is_woken_by_a_producer(r):
    streams.ensure_group(r, STREAM, "mailer", start_id="$")
    got = []

    def work(slot):
        client = connect()
        try:
            if slot == 0:
                return streams.process_new(client, STREAM, "mailer", "a", lambda i, f: got.append(f["order"]),
                                           block_ms=3000)
            wait_for(lambda: client.info("clients")["blocked_clients"] >= 1, 3, "the reader to block")
            client.xadd(STREAM, {"order": "late"})
            return 0
        finally:
            client.close()

    assert run_together(work, 2, timeout=10, what="blocking read") == [1, 0]
    assert got == ["late"]


def test_recover_claims_retries_and_dead_letters(r):
    streams.ensure_group(r, STREAM, "mailer")
    _fill(r, 3)
    r.xreadgroup("mailer", "crashed", {STREAM: ">"}, count=10)  # read, never acknowledged
    poison = _fail_on("2")
    first = streams.recover(r, STREAM, "mailer", "rescuer", poison, DEAD, min_idle_ms=0, max_deliveries=3)
    assert first == streams.Recovery(processed=2, failed=1, dead_lettered=0)
    second = streams.recover(r, STREAM, "mailer", "rescuer", poison, DEAD, min_idle_ms=0, max_deliveries=3)
    assert second == streams.Recovery(failed=1)
    third = streams.recover(r, STREAM, "mailer", "rescuer", poison, DEAD, min_idle_ms=0, max_deliveries=3)
    assert third == streams.Recovery(dead_lettered=1)
    assert r.xpending(STREAM, "mailer")["pending"] == 0
    [(_, dead)] = r.xrange(DEAD)
    assert dead["order"] == "2" and dead["deliveries"] == "4"
    assert streams.recover(r, STREAM, "mailer", "rescuer", poison, DEAD, min_idle_ms=0) == streams.Recovery()


def test_recover_respects_min_idle_time_and_skips_trimmed_entries(r):
    streams.ensure_group(r, STREAM, "mailer")
    ids = _fill(r, 2)
    assert streams.wait_until_idle(r, STREAM, "mailer", 60_000) == 0  # nothing pending: nothing to wait for
    r.xreadgroup("mailer", "slow", {STREAM: ">"}, count=10)
    with pytest.raises(TimedOut):
        streams.wait_until_idle(r, STREAM, "mailer", 60_000, timeout=0.05)
    assert streams.recover(r, STREAM, "mailer", "rescuer", _fail_on(), DEAD, min_idle_ms=60_000) == streams.Recovery()
    assert streams.wait_until_idle(r, STREAM, "mailer", 20, timeout=5) == 2
    r.xdel(STREAM, ids[0])
    assert streams.recover(r, STREAM, "mailer", "rescuer", _fail_on(), DEAD, min_idle_ms=20).processed == 1


def test_dead_letter_is_atomic_on_the_cluster(rc):
    streams.ensure_group(rc, STREAM, "mailer")
    _fill(rc, 2)
    rc.xreadgroup("mailer", "crashed", {STREAM: ">"}, count=10)
    result = streams.recover(rc, STREAM, "mailer", "rescuer", _fail_on("0"), DEAD, min_idle_ms=0, max_deliveries=2)
    assert result == streams.Recovery(processed=1, failed=1)
    result = streams.recover(rc, STREAM, "mailer", "rescuer", _fail_on("0"), DEAD, min_idle_ms=0, max_deliveries=2)
    assert result == streams.Recovery(dead_lettered=1)
    assert rc.xlen(DEAD) == 1 and rc.xpending(STREAM, "mailer")["pending"] == 0


def test_apply_once_ignores_a_redelivery(r, rc):
    for client in (r, rc):
        seen, total = key("streams", "{orders}", "seen"), key("streams", "{orders}", "revenue")
        assert streams.apply_once(client, seen, total, "1-1", 950) is True
        assert streams.apply_once(client, seen, total, "1-1", 950) is False
        assert streams.apply_once(client, seen, total, "1-2", 50) is True
        assert client.get(total) == "1000"


def test_apply_once_takes_integer_cents_and_marks_nothing_when_the_total_is_not_an_integer(r):
    seen, total = key("streams", "{orders}", "seen"), key("streams", "{orders}", "revenue")
    with pytest.raises(TypeError, match="integer cents"):
        streams.apply_once(r, seen, total, "1-1", 9.5)
    r.set(total, "9.5")  # left by a float-based version
    with pytest.raises(ResponseError, match="not an integer"):
        streams.apply_once(r, seen, total, "1-1", 950)
    assert not r.sismember(seen, "1-1") and r.get(total) == "9.5"  # no rollback needed: nothing was written
    r.delete(total)
    r.set(seen, "not a set")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        streams.apply_once(r, seen, total, "1-1", 950)
    assert not r.exists(total)


def _one_pending(client):
    streams.ensure_group(client, STREAM, "mailer")
    (entry_id,) = _fill(client, 1)
    client.xreadgroup("mailer", "crashed", {STREAM: ">"}, count=1)
    return entry_id


def test_multi_does_not_roll_back_so_a_failed_copy_loses_the_entry(r):
    entry_id = _one_pending(r)
    r.set(DEAD, "not a stream")
    with r.pipeline(transaction=True) as pipe:
        pipe.xadd(DEAD, {"order": "0"}).xack(STREAM, "mailer", entry_id)
        copied, acked = pipe.execute(raise_on_error=False)
    assert isinstance(copied, ResponseError) and acked == 1
    assert r.xpending(STREAM, "mailer")["pending"] == 0  # acknowledged, copied nowhere: lost


def test_dead_letter_checks_before_writing(r):
    entry_id = _one_pending(r)
    r.set(DEAD, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        streams.dead_letter(r, STREAM, "mailer", DEAD, (entry_id, {"order": "0"}), 4)
    assert r.xpending(STREAM, "mailer")["pending"] == 1  # still pending: nothing was written
    r.delete(DEAD)
    with pytest.raises(ResponseError, match="NOGROUP"):
        streams.dead_letter(r, STREAM, "no-such-group", DEAD, (entry_id, {"order": "0"}), 4)
    assert not r.exists(DEAD)
    assert streams.dead_letter(r, STREAM, "mailer", DEAD, (entry_id, {"order": "0"}), 4) is True
    assert streams.dead_letter(r, STREAM, "mailer", DEAD, (entry_id, {"order": "0"}), 4) is False  # moved already
    [(_, copy)] = r.xrange(DEAD)
    assert copy == {"order": "0", "original_id": entry_id, "deliveries": "4"}
    assert r.xpending(STREAM, "mailer")["pending"] == 0


def test_recover_follows_the_cursor_past_one_page(r):
    streams.ensure_group(r, STREAM, "mailer")
    _fill(r, 25)
    r.xreadgroup("mailer", "crashed", {STREAM: ">"}, count=100)
    result = streams.recover(r, STREAM, "mailer", "rescuer", _fail_on("3", "17"), DEAD, min_idle_ms=0, count=10)
    assert result == streams.Recovery(processed=23, failed=2)
    pending = r.xpending_range(STREAM, "mailer", min="-", max="+", count=100)
    assert [item["times_delivered"] for item in pending] == [2, 2]  # each failure claimed once, not again


def test_process_new_acknowledges_a_batch_in_one_xack(r):
    streams.ensure_group(r, STREAM, "mailer")
    _fill(r, 5)
    counter = RoundTripCounter(r)
    try:
        assert streams.process_new(counter.client, STREAM, "mailer", "a", _fail_on("2"), block_ms=None) == 4
        assert counter.batch_sizes == [1, 1] and counter.commands == {"XREADGROUP": 1, "XACK": 1}
    finally:
        counter.close()
    assert r.xpending(STREAM, "mailer")["pending"] == 1


def test_a_block_longer_than_the_socket_timeout_fails_on_the_client(r):
    streams.ensure_group(r, STREAM, "mailer", start_id="$")
    impatient = connect(socket_timeout=0.2, retry=None)
    try:
        with pytest.raises(redis.TimeoutError):
            streams.process_new(impatient, STREAM, "mailer", "a", lambda i, f: None, block_ms=2000)
    finally:
        impatient.close()


def test_batch_reads_cost_fewer_round_trips_and_less_time(r):
    table = experiments.run_batch_reads(r, messages=300, rounds=1)
    assert table.set_index("count")["round_trips"].to_dict() == {1: 601, 100: 7}  # counted on the client
    assert experiments.batching_speedup(table) >= 3  # the notebook's verdict
    assert not r.exists(key("streams", "{batch}", "events"))


def test_batch_reads_verdict_fails_when_batches_barely_batch(r):
    table = experiments.run_batch_reads(r, messages=300, counts=(1, 2), rounds=8)  # best of 8: a stalled COUNT 1 run is not the one kept
    assert experiments.batching_speedup(table) < 3


def test_simulation_is_deterministic_and_accounts_for_every_event(r):
    first = experiments.run_simulation(r, rate=6, workers=2, crash_probability=0.3, ticks=20)
    assert first.equals(experiments.run_simulation(r, rate=6, workers=2, crash_probability=0.3, ticks=20))
    last = first.iloc[-1]
    assert last.produced == 120 and last.dead_lettered >= 1 and last.processed > 60
    assert (first.produced == first.processed + first.pending + first.dead_lettered + first.undelivered).all()
    calm = experiments.run_simulation(r, crash_probability=0.0, poison_every=10**6).iloc[-1]
    assert calm.processed == calm.produced and calm.dead_lettered == 0
    with pytest.raises(ValueError):
        experiments.run_simulation(r, crash_probability=2)


def test_simulator_widget_starts_idle_and_reports_on_run(r):
    widget = experiments.simulator_widget(r)
    status = widget.children[2]
    assert status.value.startswith("Set the rate")
    widget.children[1].children[1].click()
    assert status.value.startswith("after 30 ticks: 150 produced")


def test_process_own_pending_handles_its_history_then_stops(r):
    _fill(r, 6)
    streams.ensure_group(r, STREAM, "g")
    r.xreadgroup("g", "mine", {STREAM: ">"}, count=4)
    r.xreadgroup("g", "theirs", {STREAM: ">"}, count=1)
    handled = []
    assert streams.process_own_pending(r, STREAM, "g", "mine", lambda i, f: handled.append(f["order"]), count=3) == 4
    assert handled == ["0", "1", "2", "3"]  # only its own, oldest first, across two batches
    assert r.xpending(STREAM, "g")["consumers"] == [{"name": "theirs", "pending": 1}]
    assert streams.process_own_pending(r, STREAM, "g", "mine", _fail_on()) == 0  # nothing left: no new entry taken


def test_process_own_pending_moves_past_a_failure_and_acknowledges_a_deleted_entry(r):
    ids = _fill(r, 3)
    streams.ensure_group(r, STREAM, "g")
    r.xreadgroup("g", "mine", {STREAM: ">"}, count=3)
    r.xdel(STREAM, ids[2])
    assert streams.process_own_pending(r, STREAM, "g", "mine", _fail_on("0")) == 1  # terminates
    pending = r.xpending_range(STREAM, "g", min="-", max="+", count=10)
    assert [(item["message_id"], item["times_delivered"]) for item in pending] == [(ids[0], 2)]  # history counts


def test_restart_verdict_holds_with_the_startup_read_and_fails_without(r):
    row = experiments.run_restart(r, startup=True).iloc[0]
    assert experiments.handled_pending_first(row)
    row = experiments.run_restart(r, startup=False).iloc[0]
    assert row["orders handled"] == [6, 7, 8] and row["pending left"] == 3
    assert not experiments.handled_pending_first(row)


def test_group_lag_counts_undelivered_entries_and_is_none_after_a_deletion(r):
    ids = _fill(r, 10)
    streams.ensure_group(r, STREAM, "g")
    r.xreadgroup("g", "c", {STREAM: ">"}, count=4)
    lag = streams.group_lag(r, STREAM, "g")
    assert (lag["entries-read"], lag["lag"], lag["pending"], lag["consumers"]) == (4, 6, 4, 1)
    r.xack(STREAM, "g", *ids[:4])
    assert (streams.group_lag(r, STREAM, "g")["lag"], streams.group_lag(r, STREAM, "g")["pending"]) == (6, 0)
    r.xdel(STREAM, ids[7])
    assert streams.group_lag(r, STREAM, "g")["lag"] is None
    r.xreadgroup("g", "c", {STREAM: ">"}, count=10)
    assert streams.group_lag(r, STREAM, "g")["lag"] == 0
    with pytest.raises(KeyError):
        streams.group_lag(r, STREAM, "nobody")


def test_remove_idle_consumers_keeps_those_with_pending_entries_or_recent_activity(r):
    _fill(r, 3)
    streams.ensure_group(r, STREAM, "g")
    r.xreadgroup("g", "holder", {STREAM: ">"}, count=2)
    r.xreadgroup("g", "idle", {STREAM: "0"}, count=1)  # reads its empty history: a consumer with nothing pending
    assert streams.remove_idle_consumers(r, STREAM, "g", min_idle_ms=3_600_000) == []  # nobody idle an hour
    assert streams.remove_idle_consumers(r, STREAM, "g", min_idle_ms=0) == ["idle"]
    assert [c["name"] for c in r.xinfo_consumers(STREAM, "g")] == ["holder"]


def test_deleting_a_consumer_with_pending_entries_loses_track_of_them(r):
    _fill(r, 3)
    streams.ensure_group(r, STREAM, "g")
    r.xreadgroup("g", "holder", {STREAM: ">"}, count=2)
    assert r.xgroup_delconsumer(STREAM, "g", "holder") == 2
    assert r.xpending(STREAM, "g")["pending"] == 0
    assert r.xautoclaim(STREAM, "g", "rescuer", min_idle_time=0)[1] == []  # nobody can find them again
    assert streams.entries(r.xreadgroup("g", "rescuer", {STREAM: ">"})) != [] and r.xlen(STREAM) == 3


def _mail_scenario(r, handler_for):
    sent = []
    stream, marks = key("streams", "{mail}", "orders"), key("streams", "{mail}", "sent")

    def setup():
        delete_prefix(r, key("streams", "{mail}") + ":")
        sent.clear()
        streams.ensure_group(r, stream, "g")
        r.xadd(stream, {"order": "42"})

    def send(fields):
        sent.append(fields["order"])

    def call(client):
        streams.process_new(client, stream, "g", "mailer", handler_for(client, marks, send), block_ms=None)

    def invariant():
        for _ in range(3):
            streams.recover(r, stream, "g", "rescuer", handler_for(r, marks, send), stream + ":dead",
                            min_idle_ms=0, max_deliveries=2)
        if len(sent) > 1:
            return f"the e-mail was sent {len(sent)} times"
        if not sent and not r.xlen(stream + ":dead"):
            return "the e-mail was never sent and nobody was told"
        return None

    return setup, call, invariant


def test_idempotent_effect_survives_a_crash_at_every_round_trip(r):
    setup, call, invariant = _mail_scenario(r, streams.idempotent)
    assert every_crash(r, setup, call, invariant, "the mailer") == 4


def test_a_plain_effect_sends_twice_after_a_crash_before_xack(r):
    setup, call, invariant = _mail_scenario(r, lambda client, marks, send: lambda entry_id, fields: send(fields))
    with pytest.raises(ExerciseFailed, match="sent 2 times"):
        every_crash(r, setup, call, invariant, "the mailer")


def test_idempotent_says_uncertain_for_a_started_effect_and_skips_a_done_one(r):
    sent = []
    handle = streams.idempotent(r, key("streams", "marks"), lambda fields: sent.append(fields))
    handle("1-0", {"n": "1"})
    handle("1-0", {"n": "1"})
    assert sent == [{"n": "1"}] and r.get(key("streams", "marks", "1-0")) == "done"
    assert 0 < r.ttl(key("streams", "marks", "1-0")) <= 7 * 86_400
    r.set(key("streams", "marks", "2-0"), "started")
    with pytest.raises(streams.Uncertain):
        handle("2-0", {"n": "2"})
    assert len(sent) == 1


def test_email_crash_verdict_holds_with_marks_and_fails_without(r):
    frame = experiments.run_email_crashes(r, use_marks=True)
    assert frame["e-mails sent"].tolist() == [1, 1, 1, 1] and frame["dead-lettered"].tolist() == [0, 1, 0, 0]
    assert experiments.never_twice_never_lost(frame)
    plain = experiments.run_email_crashes(r, use_marks=False)
    assert plain["e-mails sent"].tolist() == [2, 1] and not experiments.never_twice_never_lost(plain)


# -- exercises --------------------------------------------------------------------------------------

def _groups(client, stream):
    return [group["name"] for group in client.xinfo_groups(stream)] if client.exists(stream) else []


def _swallow_busygroup(create):
    try:
        create()
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise


def _check_then_create(client, stream, group, start):
    if group not in _groups(client, stream):
        client.xgroup_create(stream, group, id=start, mkstream=True)


def _destroy_and_recreate(client, stream, group, start):
    if client.exists(stream):
        client.xgroup_destroy(stream, group)  # 0 if there was no such group
    client.xgroup_create(stream, group, id=start, mkstream=True)


def _swallow_everything(client, stream, group, start):
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError:
        pass


def _reset_when_it_exists(client, stream, group, start):
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise
        client.xgroup_setid(stream, group, start)


def _placeholder_entry_first(client, stream, group, start):
    """The pre-MKSTREAM idiom: a dummy entry makes the key exist, and every group created at 0 delivers it."""
    if not client.exists(stream):
        client.xadd(stream, {"init": "1"})
    _swallow_busygroup(lambda: client.xgroup_create(stream, group, id=start))


def test_exercise_ensure_group_accepts_the_reference_and_unusual_correct_answers(r):
    assert evaluate(checkers.check_ensure_group, r, reference.ensure_group).passed

    def look_first_but_still_tolerate_the_race(client, stream, group, start):
        if group not in _groups(client, stream):
            _swallow_busygroup(lambda: client.xgroup_create(stream, group, id=start, mkstream=True))
    assert evaluate(checkers.check_ensure_group, r, look_first_but_still_tolerate_the_race).passed

    def course_function(client, stream, group, start):
        streams.ensure_group(client, stream, group, start_id=start)
    assert evaluate(checkers.check_ensure_group, r, course_function).passed

    def placeholder_deleted_at_once(client, stream, group, start):
        if not client.exists(stream):
            client.xdel(stream, client.xadd(stream, {"init": "1"}))  # the key stays, empty
        _swallow_busygroup(lambda: client.xgroup_create(stream, group, id=start))
    assert evaluate(checkers.check_ensure_group, r, placeholder_deleted_at_once).passed


@pytest.mark.parametrize("wrong, hint", [
    (lambda client, stream, group, start: client.xgroup_create(stream, group, id=start, mkstream=True),
     "a group that already exists is not an error"),
    (_destroy_and_recreate, "pending entries instead of 2"),
    (_check_then_create, "another app server created the group right after your command"),
    (_swallow_everything, "WRONGTYPE"),
    (lambda client, stream, group, start: reference.ensure_group(client, stream, group, "0"), "at the `start`"),
    (lambda client, stream, group, start: reference.ensure_group(client, stream, group, "$"), "at the `start`"),
    (_reset_when_it_exists, "moved the group's position"),
    (_placeholder_entry_first, "left 1 entry in it"),
    (lambda client, stream, group, start: reference.ensure_group(connect(), stream, group, start),
     "not the notebook's `r`"),
])
def test_exercise_ensure_group_rejects_wrong_answers(r, wrong, hint):
    outcome = evaluate(checkers.check_ensure_group, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def _read_new(client, stream, group, consumer, block=500, count=10, **options):
    return streams.entries(client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block, **options))


def _ack_first(client, stream, group, consumer, handler):
    handled = 0
    for entry_id, fields in _read_new(client, stream, group, consumer):
        client.xack(stream, group, entry_id)
        try:
            handler(fields)
            handled += 1
        except Exception:
            pass
    return handled


def _handled_with(read, ack_failed=False, catch=True, result=len):
    """An answer built from a read and a policy: ack after the handler (also after a failure if `ack_failed`)."""
    def answer(client, stream, group, consumer, handler):
        done = []
        for entry_id, fields in read(client, stream, group, consumer):
            try:
                handler(fields)
                done.append(entry_id)
            except Exception:
                if not catch:
                    raise
            finally:
                if ack_failed or entry_id in done:
                    client.xack(stream, group, entry_id)
        return result(done)
    return answer


def _acked_and_deleted(client, stream, group, consumer, handler):
    """Tidy but wrong: each handled entry is acknowledged and deleted from the stream in one MULTI."""
    handled = 0
    for entry_id, fields in _read_new(client, stream, group, consumer):
        try:
            handler(fields)
        except Exception:
            continue
        with client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, group, entry_id).xdel(stream, entry_id).execute()
        handled += 1
    return handled


def _dead_lettered_and_deleted(client, stream, group, dead_stream, entry_id, fields):
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(dead_stream, fields).xack(stream, group, entry_id).xdel(stream, entry_id).execute()


def test_exercise_ack_after_processing_accepts_the_reference_and_a_batched_xack(r):
    assert evaluate(checkers.check_ack_after_processing, r, reference.ack_after_processing).passed

    def one_xack_for_the_batch(client, stream, group, consumer, handler):
        done = []
        for entry_id, fields in _read_new(client, stream, group, consumer, block=200):
            try:
                handler(fields)
            except Exception:
                continue
            done.append(entry_id)
        if done:
            client.xack(stream, group, *done)
        return len(done)
    assert evaluate(checkers.check_ack_after_processing, r, one_xack_for_the_batch).passed


@pytest.mark.parametrize("wrong, hint", [
    (_ack_first, "before their handler ran"),
    (_handled_with(lambda c, s, g, n: _read_new(c, s, g, n, noack=True)), "before their handler ran"),
    (_handled_with(_read_new, catch=False), "raised RuntimeError"),
    (_handled_with(_read_new, ack_failed=True), "expected only ['boom']"),
    (_handled_with(lambda c, s, g, n: _read_new(c, s, g, n, block=0)), "wait forever"),
    (_handled_with(lambda c, s, g, n: _read_new(c, s, g, n, block=1200)), "block at most 500 ms"),
    (_handled_with(lambda c, s, g, n: _read_new(c, s, g, n, block=800)), "wait up to 800 ms"),  # fast, yet too long
    (_handled_with(lambda c, s, g, n: _read_new(c, s, g, "worker-1")), "not for the `consumer` argument"),
    (_acked_and_deleted, "deleting it (XDEL) takes it from every other group"),
    (_handled_with(lambda c, s, g, n: _read_new(c, s, g, n, count=None)), "at most 10 at a time"),
    (_handled_with(lambda c, s, g, n: streams.entries(c.xreadgroup(g, n, {s: "0"}, count=10))),
     "the handler completed for []"),
    (_handled_with(_read_new, result=bool), "got True"),
    (_handled_with(_read_new, result=lambda done: None), "returned None"),
    (lambda client, *args: reference.ack_after_processing(connect(), *args), "not the notebook's `r`"),
])
def test_exercise_ack_after_processing_rejects_wrong_answers(r, wrong, hint):
    began = time.monotonic()
    outcome = evaluate(checkers.check_ack_after_processing, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint
    assert time.monotonic() - began < 4  # a read blocked forever is cut off


def _claimed_pages(client, stream, group, consumer, restart=False, pages=None, count=100):
    cursor, page = "0-0", 0
    while True:
        cursor, claimed, *_ = client.xautoclaim(stream, group, consumer, min_idle_time=0,
                                               start_id="0-0" if restart else cursor, count=count)
        yield from claimed
        page += 1
        if (restart and not claimed) or (not restart and cursor == "0-0") or page == pages:
            return


def _claim_answer(move, claimed=_claimed_pages, max_shift=0, catch=True):
    """An answer built from a way to claim and a way to move an entry to the dead letters."""
    def answer(client, stream, group, consumer, dead_stream, max_deliveries, handler):
        for entry_id, fields in claimed(client, stream, group, consumer):
            (info,) = client.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
            if info["times_delivered"] > max_deliveries + max_shift:
                move(client, stream, group, dead_stream, entry_id, fields)
                continue
            try:
                handler(fields)
            except Exception:
                if not catch:
                    raise
                continue
            client.xack(stream, group, entry_id)
    return answer


def _in_multi(client, stream, group, dead_stream, entry_id, fields):
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(dead_stream, fields)
        pipe.xack(stream, group, entry_id)
        pipe.execute()


def _ack_then_add(client, stream, group, dead_stream, entry_id, fields):
    client.xack(stream, group, entry_id)
    client.xadd(dead_stream, fields)


def _add_then_ack(client, stream, group, dead_stream, entry_id, fields):
    client.xadd(dead_stream, fields)
    client.xack(stream, group, entry_id)


def test_exercise_claim_or_dead_letter_accepts_the_reference_and_an_unusual_correct_answer(r):
    assert evaluate(checkers.check_claim_or_dead_letter, r, reference.claim_or_dead_letter).passed

    def course_dead_letter(client, stream, group, dead_stream, entry_id, fields):
        streams.dead_letter(client, stream, group, dead_stream, (entry_id, fields), deliveries=0)
    assert evaluate(checkers.check_claim_or_dead_letter, r, _claim_answer(course_dead_letter)).passed

    def counts_read_before_claiming(client, stream, group, consumer, dead_stream, max_deliveries, handler):
        """Delivery counts from XPENDING first (one page at a time); the claim will add one to each."""
        before, start = {}, "-"
        while page := client.xpending_range(stream, group, min=start, max="+", count=100):
            before.update((item["message_id"], item["times_delivered"]) for item in page)
            start = "(" + page[-1]["message_id"]
        for entry_id, fields in _claimed_pages(client, stream, group, consumer):
            if before.get(entry_id, 0) + 1 > max_deliveries:
                _in_multi(client, stream, group, dead_stream, entry_id, fields)
                continue
            try:
                handler(fields)
            except Exception:
                continue
            client.xack(stream, group, entry_id)
    assert evaluate(checkers.check_claim_or_dead_letter, r, counts_read_before_claiming).passed

    # pages of 1000 that follow the cursor: the backlog fits in one, so the checker tries one larger than a page
    assert evaluate(checkers.check_claim_or_dead_letter, r,
                    _claim_answer(_in_multi, claimed=lambda *args: _claimed_pages(*args, count=1000))).passed


@pytest.mark.parametrize("wrong, hint", [
    (_claim_answer(_in_multi, max_shift=10**6), "handled a 4th time"),
    (_claim_answer(_in_multi, max_shift=-1), "expected ['poison']"),
    (_claim_answer(lambda client, stream, group, dead, entry_id, fields: client.xadd(dead, fields)),
     "expected only ['boom']"),
    (_claim_answer(_ack_then_add), "neither pending nor dead-lettered nor handled: it is lost"),
    (_claim_answer(_add_then_ack), "both in the dead-letter stream and pending"),
    (_claim_answer(_in_multi, claimed=lambda *args: _claimed_pages(*args, pages=1)), "only 100 were handled"),
    (_claim_answer(_in_multi, claimed=lambda *args: _claimed_pages(*args, restart=True)),
     "claimed again within the same call"),
    (_claim_answer(_in_multi, catch=False), "raised RuntimeError"),
    (_claim_answer(_dead_lettered_and_deleted), "the stream held 4 entries and holds 3 after your call"),
    # one page big enough for the checker's first backlog, and no cursor followed
    (_claim_answer(_in_multi, claimed=lambda *args: _claimed_pages(*args, pages=1, count=1000)),
     "with 1002 entries pending only 1000 were handled"),
    (_claim_answer(_in_multi, claimed=lambda *args: _claimed_pages(*args, count=10**6)), "asks for 1000000 entries"),
    # the notebook's naming convention instead of the argument
    (lambda client, stream, group, consumer, dead_stream, *args: reference.claim_or_dead_letter(
        client, stream, group, consumer, stream + ":dead", *args), "(`dead_stream`) holds []"),
    (lambda client, *args: reference.claim_or_dead_letter(connect(), *args), "not the notebook's `r`"),
])
def test_exercise_claim_or_dead_letter_rejects_wrong_answers(r, wrong, hint):
    outcome = evaluate(checkers.check_claim_or_dead_letter, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_unsolved_exercises_say_so(r):
    def unsolved(*args):
        raise NotImplementedError

    for checker in (checkers.check_ensure_group, checkers.check_ack_after_processing,
                    checkers.check_claim_or_dead_letter):
        assert evaluate(checker, r, unsolved).status == "not solved yet"
