"""connect() / connect_cluster(): the course's clients, their timeouts and retries, the errors a learner sees,
and notebook 00's round-trip verdict."""

import os
import signal
import time

import pytest
import redis
from redis.backoff import ExponentialWithJitterBackoff

from course_lib import connection
from course_lib.connection import CourseConnectionError, connect, connect_cluster, server_identity
from course_lib.experiments.getting_started import run_ping_round_trips
from course_lib.keys import key
from course_lib.servers import free_port


def test_connect_decodes_and_uses_resp3(r):
    r.set("course:test:greeting", "hello")
    assert r.get("course:test:greeting") == "hello"
    assert r.connection_pool.connection_kwargs["protocol"] == 3
    assert r.get_retry()._retries == 3


def test_timeouts_are_set_deliberately_not_inherited(r, rc):
    """Before: no socket_timeout in the settings at all, so the installed redis-py's default applied."""
    for client in (r, rc.get_primaries()[0].redis_connection):
        settings = client.connection_pool.connection_kwargs
        assert settings["socket_timeout"] == connection.SOCKET_TIMEOUT == 5
        assert settings["socket_connect_timeout"] == connection.CONNECT_TIMEOUT == 2


def test_a_blocking_command_gets_no_time_beyond_the_socket_timeout(r):
    """redis-py does not add BLPOP's own timeout to the read: a block longer than socket_timeout fails."""
    empty = key("connection", "test", "empty")
    with connect(socket_timeout=0.5, retry=None) as quick:
        assert quick.blpop(empty, 0.1) is None  # the server answers after 0.1 s: within 0.5 s
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            quick.blpop(empty, 3)  # the server would answer after 3 s; the client gives up after 0.5 s
        assert time.monotonic() - started < 2.5


def test_backoff_is_full_jitter_below_50_100_200_ms():
    """Before: base 50 ms, so waits up to 100, 200, 400 ms while the notebook said 50, 100, 200."""
    backoff = connection.course_retry()._backoff
    assert isinstance(backoff, ExponentialWithJitterBackoff)
    for failures, bound in ((1, 0.05), (2, 0.1), (3, 0.2)):
        waits = [backoff.compute(failures) for _ in range(5_000)]
        assert 0 <= min(waits) < 0.05 * bound  # drawn from 0, not from the bound up
        assert 0.95 * bound < max(waits) < bound
        assert 0.45 * bound < sum(waits) / len(waits) < 0.55 * bound


def test_cluster_client_sees_three_primaries(rc):
    assert len(rc.get_primaries()) == 3 and len(rc.get_replicas()) == 3
    rc.set("course:test:{a}", 1)
    assert rc.get("course:test:{a}") == "1"


def test_server_identity_names_engine_version_and_mode(r, rc):
    engine, version, mode = server_identity(r)
    assert engine in ("Redis", "Valkey") and version.count(".") == 2 and mode == "standalone"
    assert server_identity(rc.get_primaries()[0].redis_connection)[2] == "cluster"


def test_unreachable_url_names_the_setting_and_the_fix(monkeypatch):
    monkeypatch.setenv("COURSE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(CourseConnectionError, match=r"COURSE_REDIS_URL.*unset COURSE_REDIS_URL"):
        connect(retry=None)


def test_malformed_url_is_explained(monkeypatch):
    monkeypatch.setenv("COURSE_REDIS_URL", "localhost:6379")
    with pytest.raises(CourseConnectionError, match=r"not a usable Redis URL.*redis://host:port/db"):
        connect()


def test_password_is_not_printed(monkeypatch):
    monkeypatch.setenv("COURSE_REDIS_URL", f"redis://me:s3cret@127.0.0.1:{free_port()}/0")
    with pytest.raises(CourseConnectionError) as error:
        connect(retry=None)
    assert "s3cret" not in str(error.value) and "me:***@" in str(error.value)


def test_cluster_url_on_a_standalone_server_says_so(monkeypatch):
    monkeypatch.setenv("COURSE_CLUSTER_URL", connection.os.environ["COURSE_REDIS_URL"])
    with pytest.raises(CourseConnectionError, match="not in cluster mode"):
        connect_cluster()


def test_unreachable_cluster_url(monkeypatch):
    monkeypatch.setenv("COURSE_CLUSTER_URL", f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(CourseConnectionError, match="COURSE_CLUSTER_URL"):
        connect_cluster(retry=None)


def test_an_embedded_server_killed_under_you_is_restarted_on_reconnect(tmp_path, monkeypatch):
    from course_lib import runtime
    from course_lib.concurrency import wait_for
    from course_lib.servers import pid_alive

    folder = tmp_path / "runtime"
    stack = runtime.up(folder)
    try:
        for name, value in stack.settings().items():
            monkeypatch.setenv(name, value)
        os.kill(stack.standalone.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(stack.standalone.pid), 10, "the killed server to exit")
        client = connect()  # the URL a kernel was given still works: same port, new process
        assert client.ping() and server_identity(client)[2] == "standalone"
        assert runtime.load(folder).standalone.pid != stack.standalone.pid
    finally:
        runtime.down(folder)


# -- notebook 00's measured verdict: where a command's time goes -----------------------------------

def test_a_ping_alone_costs_several_times_one_in_a_batch(r):
    table = run_ping_round_trips(r, commands=100)
    assert list(table["round_trips"]) == [100, 1]
    assert table.loc["one per round trip", "vs_batched"] >= 3


def test_the_round_trip_verdict_fails_when_nothing_is_batched(r):
    """The degraded setting: a "batch" of one PING is a round trip too, so the verdict must say False."""
    table = run_ping_round_trips(r, commands=1)
    assert not table.loc["one per round trip", "vs_batched"] >= 3


def test_credentials_are_what_another_client_of_the_same_servers_needs(r, rc):
    from course_lib.connection import credentials

    for client in (r, rc):
        node = client.get_default_node() if hasattr(client, "get_default_node") else None
        host, port = (node.host, node.port) if node else (client.connection_pool.connection_kwargs["host"],
                                                          client.connection_pool.connection_kwargs["port"])
        with redis.Redis(host=host, port=port, socket_timeout=2, **credentials(client)) as other:
            assert other.ping()
        if credentials(client):  # the embedded servers require a password: without it, refused
            with redis.Redis(host=host, port=port, socket_timeout=2, retry=None) as stranger:
                with pytest.raises(redis.AuthenticationError):
                    stranger.ping()
