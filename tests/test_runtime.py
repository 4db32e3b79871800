"""The embedded servers: start, reuse, recover, stop, and never leave a process behind.

Each test uses its own runtime folder, so the session's servers (which the other tests use) are
never touched.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
import redis

from course_lib import runtime
from course_lib.concurrency import wait_for
from course_lib.servers import ServerError, find_binary, pid_alive, start_server


def _all_pids(stack):
    return [server.pid for server in stack.servers()]


def _assert_gone(pids):
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), 10, "every server process to exit")


@pytest.fixture
def folder(tmp_path):
    yield tmp_path / "runtime"
    runtime.down(tmp_path / "runtime")  # a failed test still stops what it started


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """One stack started like `python -m course_lib up`, shared by the tests that leave it intact."""
    path = tmp_path_factory.mktemp("kept") / "runtime"
    stack = runtime.up(path)
    yield stack
    runtime.down(path)


def test_up_reuses_live_servers(kept):
    again = runtime.up(kept.folder)
    assert _all_pids(again) == _all_pids(kept)
    assert all(server.alive() for server in again.servers())
    with kept.standalone.client() as client:
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("save") == {"save": ""}


def test_a_busy_server_is_not_mistaken_for_a_dead_one(kept):
    """A lesson running DEBUG SLEEP (or a long KEYS) while another kernel calls `up`: nothing is replaced."""
    def sleep_on_server():
        with kept.standalone.client(socket_timeout=10) as client:
            client.execute_command("DEBUG", "SLEEP", "2.5")  # longer than the 2 s management timeout

    def server_is_blocked() -> bool:
        try:
            with kept.standalone.client(socket_timeout=0.2) as client:
                client.ping()
            return False
        except redis.TimeoutError:
            return True

    sleeper = threading.Thread(target=sleep_on_server)
    sleeper.start()
    try:
        wait_for(server_is_blocked, 5, "DEBUG SLEEP to block the server")
        assert _all_pids(runtime.up(kept.folder)) == _all_pids(kept)
    finally:
        sleeper.join(10)


def test_cluster_has_three_primaries_three_replicas_and_all_slots(kept):
    roles = sorted(row["role"] for row in runtime.status(kept.folder))
    assert roles == ["primary"] * 3 + ["replica"] * 3 + ["standalone"]
    slots = runtime.client_slots(kept.cluster[0])
    assert len(slots) == 3 and all(len(ports) == 2 for ports in slots)  # a primary and its replica per range
    with kept.cluster[0].client() as client:
        info = client.cluster("info")
    assert info["cluster_state"] == "ok"
    assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == "16384"


def test_a_lease_never_stops_servers_that_were_already_kept(kept):
    """`make lab` over servers started with `python -m course_lib up` leaves them running on exit."""
    assert runtime.up(kept.folder, owner=os.getpid()).owners is None
    assert runtime.release(os.getpid(), kept.folder) is False
    assert all(server.alive() for server in kept.servers())


def test_cli_up_env_and_status(kept):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "course_lib", *args, "--runtime-dir", str(kept.folder)],
                              capture_output=True, text=True, check=True).stdout

    assert cli("up", "--env").splitlines() == [f"export COURSE_REDIS_URL={kept.redis_url}",
                                                f"export COURSE_CLUSTER_URL={kept.cluster_url}",
                                                f"export COURSE_RUNTIME_DIR={kept.folder}"]
    table = cli("status")
    assert table.count(" primary ") == 3 and table.count(" replica ") == 3 and "False" not in table


def test_down_stops_everything_and_leaves_no_process(folder):
    stack = runtime.up(folder)
    assert runtime.down(folder) is True
    _assert_gone(_all_pids(stack))
    assert runtime.load(runtime.runtime_dir(folder)) is None
    assert runtime.down(folder) is False


def test_dead_standalone_is_replaced_and_the_healthy_cluster_kept(folder):
    stack = runtime.up(folder)
    os.kill(stack.standalone.pid, signal.SIGKILL)
    _assert_gone([stack.standalone.pid])
    healed = runtime.up(folder)
    assert healed.standalone.alive() and healed.standalone.pid != stack.standalone.pid
    assert healed.redis_url == stack.redis_url  # same port: URLs handed to kernels stay valid
    assert [n.pid for n in healed.cluster] == [n.pid for n in stack.cluster]


def test_cluster_with_a_dead_node_is_rebuilt(folder):
    stack = runtime.up(folder)
    os.kill(stack.cluster[1].pid, signal.SIGKILL)
    healed = runtime.up(folder)
    assert all(node.alive() for node in healed.cluster)
    assert runtime._cluster_ready(healed.cluster)
    assert healed.cluster_url == stack.cluster_url
    _assert_gone([node.pid for node in stack.cluster])  # the old nodes were stopped, not orphaned


def test_stale_state_file_never_touches_a_stranger(folder):
    """A state file left by a reboot: its pids are dead or now other programs', its port someone else's."""
    folder.mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    squatter = socket.create_server(("127.0.0.1", 0))
    try:
        node = {"port": squatter.getsockname()[1], "pid": stranger.pid, "dir": str(folder), "bus_port": None}
        dead = {"port": 2, "pid": 2 ** 22 + 1, "dir": str(folder), "bus_port": 3}
        (folder / "state.json").write_text(json.dumps({
            "engine": "Redis 7.0.0", "binary": "/nowhere/redis-server", "owners": None, "watchdog": None,
            "standalone": node, "cluster": [dead] * 6,
        }))
        stack = runtime.up(folder)
        assert stack.standalone.alive() and stack.standalone.port != node["port"]
        assert stranger.poll() is None
    finally:
        squatter.close()
        stranger.kill()
        stranger.wait()


def test_servers_of_an_interrupted_up_are_swept(folder):
    """`up` killed before it wrote state.json leaves unrecorded servers; the next `up` or `down` stops them."""
    folder.mkdir(parents=True)
    binary = find_binary()
    orphans = [start_server(binary, folder / "standalone"), start_server(binary, folder / "cluster", cluster=True)]
    stack = runtime.up(folder)
    _assert_gone([orphan.pid for orphan in orphans])
    assert sorted(p.parent.name for p in folder.glob("*/node-*/server.pid")) == sorted(
        f"node-{server.port}" for server in stack.servers())  # nothing but the live stack's folders remain

    orphan = start_server(binary, folder / "cluster", cluster=True)
    runtime.down(folder)
    _assert_gone([orphan.pid] + _all_pids(stack))


def test_garbage_state_file_is_ignored(folder):
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{not json")
    assert runtime.load(folder) is None
    assert runtime.up(folder).standalone.alive()


def test_last_release_stops_the_servers(folder):
    first, second = os.getpid(), os.getppid()
    stack = runtime.up(folder, owner=first)
    runtime.up(folder, owner=second)
    assert runtime.release(first, folder) is False
    assert stack.standalone.alive()
    assert runtime.release(second, folder) is True
    _assert_gone(_all_pids(stack))


def test_servers_started_by_a_kernel_that_dies_are_stopped(tmp_path):
    """A notebook kernel with no settings starts the servers on demand; kill -9 it, nothing remains."""
    folder = tmp_path / "runtime"
    kernel = textwrap.dedent("""
        import sys
        from course_lib.connection import connect
        connect().ping()
        print("connected", flush=True)
        sys.stdin.read()  # stay alive until killed
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("COURSE_REDIS_URL", "COURSE_CLUSTER_URL")}
    env["COURSE_RUNTIME_DIR"] = str(folder)
    with subprocess.Popen([sys.executable, "-c", kernel], env=env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout.readline().strip() == "connected"
            stack = runtime.load(runtime.runtime_dir(folder))
            assert stack.owners == [process.pid]
            pids = _all_pids(stack) + [stack.watchdog]
            process.kill()
            process.wait()
            _assert_gone(pids)  # the watchdog noticed its owner died and stopped everything, itself included
            assert runtime.load(runtime.runtime_dir(folder)) is None
        finally:
            process.kill()
            runtime.down(folder)


def test_cli_reports_errors_without_a_traceback(tmp_path):
    env = {**os.environ, "COURSE_SERVER_BINARY": str(tmp_path / "missing-server")}
    result = subprocess.run([sys.executable, "-m", "course_lib", "up", "--runtime-dir", str(tmp_path)],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: COURSE_SERVER_BINARY=") and "Traceback" not in result.stderr

    result = subprocess.run([sys.executable, "-m", "course_lib", "status", "--runtime-dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "python -m course_lib up" in result.stdout


def test_an_unusable_runtime_folder_is_explained(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("COURSE_RUNTIME_DIR", str(blocker / "runtime"))
    with pytest.raises(ServerError, match=r"Cannot use runtime folder .* Set COURSE_RUNTIME_DIR to a writable folder"):
        runtime.up()


def test_scratch_cluster_is_private_and_removed_on_exit():
    with runtime.scratch_cluster() as nodes:
        assert len(nodes) == 6 and runtime._cluster_ready(nodes)
        pids, folders = [n.pid for n in nodes], [n.dir for n in nodes]
    _assert_gone(pids)
    assert not any(os.path.exists(folder) for folder in folders)
