"""connect() / connect_cluster(): the course's clients, and the errors a learner sees."""

import os
import signal

import pytest

from course_lib import connection
from course_lib.connection import CourseConnectionError, connect, connect_cluster, server_identity
from course_lib.servers import free_port


def test_connect_decodes_and_uses_resp3(r):
    r.set("course:test:greeting", "hello")
    assert r.get("course:test:greeting") == "hello"
    assert r.connection_pool.connection_kwargs["protocol"] == 3
    assert r.get_retry()._retries == 3


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
    from course_lib.servers import pid_alive, wait_for

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
