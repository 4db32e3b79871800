"""Chapter 10: private servers killed and restarted, what survived counted; verdicts shown turning False
in degraded settings; no private server outlives its `with` block or the function that started it;
the exercises' checkers fail wrong answers with the hint that names the mistake."""

import pytest

from course_lib import persistence, servers
from course_lib.exercises import evaluate
from course_lib.exercises.persistence import check_confirmed_incr, check_loss_budget
from course_lib.exercises.solutions import persistence as solutions
from course_lib.experiments import persistence as experiments
from course_lib.persistence import (COUNTER, aof, aof_files, cut_aof_tail, cut_link, durable_server,
                                    follow, in_sync, incr_on_disk, lag, primary_and_replica, promote, rdb, rewrite_aof,
                                    snapshot, surviving, write_until_killed)
from course_lib.servers import ServerError, find_binary, pid_alive


@pytest.fixture
def started(monkeypatch):
    """Every pid of a private server started during the test, restarts included (real servers: a spy, not a mock)."""
    pids = []
    start_server, restart = servers.start_server, persistence.DurableServer.restart

    def spied_start(*args, **kwargs):
        server = start_server(*args, **kwargs)
        pids.append(server.pid)
        return server

    def spied_restart(self, *args, **kwargs):
        seconds = restart(self, *args, **kwargs)
        pids.append(self.pid)
        return seconds

    monkeypatch.setattr(servers, "start_server", spied_start)
    monkeypatch.setattr(persistence.DurableServer, "restart", spied_restart)
    return pids


def _none_alive(pids):
    return pids and not any(pid_alive(pid) for pid in pids)


# -- the private server: kill, restart, stop --------------------------------------------------------

def test_a_killed_server_restarts_from_its_folder_and_nothing_outlives_the_block(started):
    with durable_server(aof("always")) as server:
        folder = server.dir
        with server.client() as client:
            assert client.incr(COUNTER) == 1
        first = server.pid
        server.kill()
        assert not pid_alive(first)
        seconds = server.restart()
        assert 0 < seconds < 60 and server.pid != first and server.alive()
        with server.client() as client:
            assert surviving(client) == 1
    assert _none_alive(started) and len(started) == 2
    assert not folder.exists()


def test_a_block_that_raises_still_stops_the_restarted_server(started):
    with pytest.raises(RuntimeError), durable_server(rdb()) as server:
        server.kill()
        server.restart()
        raise RuntimeError("the cell failed")
    assert _none_alive(started) and len(started) == 2


def test_restart_refuses_a_running_server_and_settings_are_checked():
    with pytest.raises(ValueError, match="appendfsync is one of"):
        aof("sometimes")
    with durable_server(rdb()) as server:
        with pytest.raises(ServerError, match="still running"):
            server.restart()


def test_a_cut_aof_tail_is_dropped_or_refused(started):
    with durable_server(aof("always")) as server:
        with server.client() as client:
            for _ in range(3):
                client.incr(COUNTER)
        with pytest.raises(ServerError, match="kill the server"):
            cut_aof_tail(server, 5)
        server.kill()
        assert cut_aof_tail(server, 5) == "appendonly.aof.1.incr.aof"
        server.config["aof-load-truncated"] = "no"
        with pytest.raises(ServerError, match="Unexpected end of file"):  # bounded: it exits, and that is seen
            server.restart(timeout=20)
        server.config["aof-load-truncated"] = "yes"
        server.restart()
        with server.client() as client:
            assert surviving(client) == 2
    assert _none_alive(started)


def test_snapshot_and_rewrite_wait_for_their_files():
    with durable_server(aof("everysec")) as server, server.client() as client:
        client.incr(COUNTER)
        info = snapshot(client)
        assert info["rdb_saves"] >= 1 and (server.dir / "dump.rdb").exists()
        assert info["rdb_last_cow_size"] >= 0 and client.info("stats")["latest_fork_usec"] > 0
        assert aof_files(server) == {"appendonly.aof.1.base.rdb": "base", "appendonly.aof.1.incr.aof": "incremental"}
        rewrite_aof(client)
        assert aof_files(server) == {"appendonly.aof.2.base.rdb": "base", "appendonly.aof.2.incr.aof": "incremental"}


def test_write_until_killed_counts_acknowledged_writes_and_paces_them():
    with durable_server(aof("no")) as server:
        stream = write_until_killed(server, kill_after=0.5, rate=100)
        assert stream.error == "ConnectionError" and not server.alive()
        assert 20 <= stream.acknowledged <= 60  # 100 writes/s for 0.5 s, on a loaded machine
        server.restart()
        with server.client() as client:
            assert surviving(client) >= stream.acknowledged


# -- replication -------------------------------------------------------------------------------------

def test_replication_lag_cut_and_promotion(started):
    with primary_and_replica() as (primary, replica), primary.client() as client:
        assert in_sync(replica, primary) and lag(primary, replica) == 0
        client.incr(COUNTER)
        cut_link(replica)
        client.incr(COUNTER)
        assert lag(primary, replica) > 0 and not in_sync(replica, primary)
        follow(replica, primary)  # back in sync: the link is up again and it caught up
        with replica.client() as on_replica:
            assert surviving(on_replica) == 2
        cut_link(replica)
        client.incr(COUNTER)
        primary.kill()
        promote(replica)
        with replica.client() as promoted:
            assert promoted.info("replication")["role"] == "master" and surviving(promoted) == 2
    assert _none_alive(started) and len(started) == 2


def test_waitaof_where_the_server_has_it():
    binary = find_binary()
    has_waitaof = binary.engine == "Valkey" or tuple(map(int, binary.version.split(".")[:2])) >= (7, 2)
    with primary_and_replica(aof("everysec")) as (primary, _replica), primary.client() as client:
        on_disk = incr_on_disk(client, COUNTER, local=1, replicas=1, timeout_ms=5000)
        assert on_disk == ((1, 1, 1) if has_waitaof else None)
        assert surviving(client) == 1  # the INCR is applied either way
    if has_waitaof:  # a replica without an AOF cannot fsync it: WAITAOF times out with 0 replicas
        with primary_and_replica(aof("everysec")) as (primary, replica), primary.client() as client:
            with replica.client() as settings:
                settings.config_set("appendonly", "no")
            assert incr_on_disk(client, COUNTER, local=1, replicas=1, timeout_ms=200) == (1, 1, 0)


# -- the experiments' verdicts, and the same turning False ------------------------------------------

def test_policy_verdicts_hold_and_turn_false_without_an_aof(started):
    policies = experiments.run_policies(seconds=1.0)
    assert list(policies["policy"]) == ["always", "everysec", "no"]
    assert all(experiments.policy_verdicts(policies).values()), policies
    # Degraded: servers with no AOF (snapshots never taken) lose every acknowledged write.
    no_aof = experiments.run_policies({label: rdb() for label in persistence.POLICIES}, seconds=2.5)
    verdicts = experiments.policy_verdicts(no_aof)
    assert (no_aof["survived"] == 0).all(), no_aof
    assert not any(list(verdicts.values())[:3]), verdicts
    assert _none_alive(started) and len(started) == 12


def test_throughput_verdict_turns_false_when_always_does_not_fsync_per_write():
    # Degraded: the row labelled "always" is an everysec server, so nothing makes it slower.
    same = experiments.run_policies({"always": aof("everysec"), "everysec": aof("everysec"), "no": aof("no")},
                                    seconds=1.0)
    assert not experiments.policy_verdicts(same)["appendfsync always is at least 2x slower than everysec (one fsync per write)"]


def test_snapshot_loss_is_exact_and_turns_false_with_an_aof():
    loss = experiments.run_snapshot_loss(before=300, after=120)
    assert (loss["survived"], loss["lost"]) == (300, 120) and loss["cow_bytes"] >= 0
    assert all(experiments.snapshot_verdicts(loss, after=120).values())
    kept = experiments.run_snapshot_loss(before=300, after=120, config=aof("always"))
    assert kept["lost"] == 0 and not any(experiments.snapshot_verdicts(kept, after=120).values())


def test_failover_verdicts_hold_and_turn_false(started):
    failover = experiments.run_failover(confirmed=4, unconfirmed=3)
    assert (failover["acknowledged"], failover["on_replica"], failover["lost"]) == (7, 4, 3)
    assert all(experiments.failover_verdicts(failover, unconfirmed=3).values())
    no_cut = experiments.run_failover(confirmed=4, unconfirmed=3, cut=False)
    assert no_cut["lost"] == 0
    assert not experiments.failover_verdicts(no_cut, unconfirmed=3)[
        "the 3 writes the primary acknowledged after the cut were lost when its replica took over"]
    # Degraded: WAIT 0 "confirms" every write at once, the lost ones too (at least the 3 after the cut;
    # without WAIT 1 holding it back, the cut may also beat earlier writes to the replica).
    wait_zero = experiments.run_failover(confirmed=4, unconfirmed=3, replicas=0)
    assert wait_zero["confirmed_lost"] >= 3
    assert not experiments.failover_verdicts(wait_zero, unconfirmed=3)["WAIT had confirmed none of the lost writes"]
    assert _none_alive(started) and len(started) == 6


def test_stream_verdicts_follow_the_settings_not_the_data_type():
    without, with_aof = experiments.run_stream_restart(rdb(), entries=20), experiments.run_stream_restart(aof("always"), entries=20)
    assert (without, with_aof) == ({"acknowledged": 20, "survived": 0}, {"acknowledged": 20, "survived": 20})
    assert all(experiments.stream_verdicts(without, with_aof).values())
    # Degraded: both servers persist (or neither does): each verdict turns False.
    assert not any(experiments.stream_verdicts(with_aof, without).values())


def test_restart_times_verdicts_and_their_degraded_settings():
    times = experiments.run_restart_times(sizes=(20_000, 100_000), restarts=1)
    assert set(times["format"]) == {"RDB", "AOF (commands)"} and (times["restart_s"] > 0).all()
    assert times.groupby("format")["mb_on_disk"].max().min() > 1
    # Degraded: one size only, so nothing can grow.
    one_size = experiments.run_restart_times(sizes=(20_000,), restarts=1)
    assert not experiments.restart_verdicts(one_size)[
        "restart time grows with the data (largest size at least 2x the smallest, both formats)"]
    # The format verdict reads the right columns: swapped, it fails.
    swapped = times.replace({"format": {"RDB": "AOF (commands)", "AOF (commands)": "RDB"}})
    assert experiments.restart_verdicts(times)["at the largest size the AOF of commands takes longer to load than RDB"] \
        != experiments.restart_verdicts(swapped)["at the largest size the AOF of commands takes longer to load than RDB"]
    figure = experiments.plot_restart_times(times)
    assert len(figure.axes[0].lines) == 2


def test_the_widget_runs_a_kill(started, capsys):
    widget = experiments.kill_widget()
    (policy, rate, run), status = widget.children[0].children, widget.children[1]
    policy.value, rate.value = "RDB only", 200
    run.click()
    assert status.value.startswith("RDB only, target 200 writes/s")
    table = capsys.readouterr().out  # outside a kernel, the Output widget lets the table through
    assert "acknowledged" in table and "RDB only" in table
    assert _none_alive(started)


# -- the exercises ----------------------------------------------------------------------------------

def _unsolved(*args):
    raise NotImplementedError


def test_reference_solutions_pass_and_stubs_are_not_solved_yet(r, started):
    assert evaluate(check_loss_budget, r, solutions.loss_budget).passed
    assert evaluate(check_confirmed_incr, r, solutions.confirmed_incr).passed
    assert evaluate(check_loss_budget, r, _unsolved).status == "not solved yet"
    assert evaluate(check_confirmed_incr, r, _unsolved).status == "not solved yet"
    assert _none_alive(started)


def _settings(zero: dict, one: dict):
    return lambda budget: zero if budget == 0 else one


BUDGET_WRONG_ANSWERS = {
    "nothing persisted": (_settings({}, {}), "came back with 0"),
    "snapshots only": (_settings({"save": "1 1"}, {"save": "1 1"}), "snapshots alone lose everything"),
    "everysec for a zero budget": (_settings(aof("everysec"), aof("everysec")), "only a policy that fsyncs before replying"),
    "always for a one-second budget": (_settings(aof("always"), aof("always")), "pays one fsync per write"),
    "no for a one-second budget": (_settings(aof("always"), aof("no")), "leaves the flush to the kernel"),
    "a setting the server refuses": (_settings({"appendfsync": "sometimes"}, {}), "would not start with your settings"),
    "no return": (lambda budget: None, "is a `return` missing"),
}


@pytest.mark.parametrize("answer, hint", BUDGET_WRONG_ANSWERS.values(), ids=BUDGET_WRONG_ANSWERS.keys())
def test_loss_budget_wrong_answers_fail_with_their_hint(r, answer, hint):
    outcome = evaluate(check_loss_budget, r, answer)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def test_loss_budget_unusual_right_answer_passes(r):
    # The course's own helpers, and snapshots on top of the AOF: both fine.
    answer = _settings({**aof("always"), "save": "60 1000"}, {**aof("everysec"), "save": "60 1000"})
    assert evaluate(check_loss_budget, r, answer).passed


def _plain_incr(client, key):
    client.incr(key)
    return True


def _wait_first(client, key):
    replicas = client.execute_command("WAIT", 1, 500)
    client.incr(key)
    return replicas >= 1


def _wait_forever(client, key):
    client.incr(key)
    return client.execute_command("WAIT", 1, 0) >= 1


def _wait_for_none(client, key):
    client.incr(key)
    return client.execute_command("WAIT", 0, 100) >= 0


def _returns_the_count(client, key):
    client.incr(key)
    return client.execute_command("WAIT", 1, 100)


def _incr_twice(client, key):
    client.incr(key)
    client.incr(key)
    return client.execute_command("WAIT", 1, 300) >= 1


CONFIRMED_WRONG_ANSWERS = {
    "the primary's reply taken as confirmation": (_plain_incr, "still answered True"),
    "WAIT before the write": (_wait_first, "before it wrote"),
    "WAIT without a timeout": (_wait_forever, "waited until the socket timed out"),
    "WAIT for zero replicas": (_wait_for_none, "still answered True"),
    "the replica count returned": (_returns_the_count, "must return True or False"),
    "two increments per call": (_incr_twice, "each call increments by one"),
    "the client it was given unused": (lambda client, key: True, "sent no command through the `client`"),
}


@pytest.mark.parametrize("answer, hint", CONFIRMED_WRONG_ANSWERS.values(), ids=CONFIRMED_WRONG_ANSWERS.keys())
def test_confirmed_incr_wrong_answers_fail_with_their_hint(r, answer, hint):
    outcome = evaluate(check_confirmed_incr, r, answer)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def test_confirmed_incr_unusual_right_answer_passes(r):
    def separate_calls(client, key):  # two round trips instead of a pipeline: one pooled connection, still fine
        client.incr(key)
        return client.wait(1, 300) == 1

    assert evaluate(check_confirmed_incr, r, separate_calls).passed

