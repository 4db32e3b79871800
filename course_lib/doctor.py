"""`python -m course_lib doctor`: is this machine ready for the course (or a workshop)?

Each check prints `ok` or what to do; the last line is one short status to paste into the
workshop chat, e.g. `doctor: READY - Redis 7.0.15, Python 3.11.2, Linux, room alice@10.0.0.5:6390`.
The exit code is 0 only when every check passed.

The servers check starts a stack of its own in a temporary runtime folder (and stops it), so it
proves a server can start and a cluster can form here without touching the learner's servers.
When `COURSE_REDIS_URL` / `COURSE_CLUSTER_URL` are set it checks those servers instead.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import redis

from course_lib import runtime
from course_lib.concurrency import TimedOut
from course_lib.connection import CourseConnectionError, connect, connect_cluster
from course_lib.servers import ServerError, find_binary
from course_lib.settings import CLUSTER_URL_SETTING, REDIS_URL_SETTING

LAB_PORT = 8888  # JupyterLab's default port, which `python -m course_lib lab` opens unless told otherwise


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found when ok, what to do when not


def check_python() -> Check:
    found = platform.python_version()
    if sys.version_info >= (3, 10):
        return Check("python", True, found)
    return Check("python", False, f"Python {found} is too old: install Python >= 3.10 and run `make PYTHON=python3.11 lab`")


def check_platform() -> Check:
    system = platform.system()
    if system in {"Linux", "Darwin"}:
        return Check("platform", True, f"{system} {platform.machine()}")
    return Check("platform", False, f"{system} cannot run the course's servers: use WSL2 (Ubuntu), "
                                    "or join a workshop room and run only JupyterLab here")


def check_binary() -> Check:
    try:
        binary = find_binary()
    except ServerError as exc:
        return Check("server binary", False, str(exc))
    return Check("server binary", True, f"{binary.label} ({binary.path})")


def check_servers() -> Check:
    """Start a standalone server and a 6-node cluster in a throwaway folder, or reach the configured ones."""
    if all(os.environ.get(name) for name in (REDIS_URL_SETTING, CLUSTER_URL_SETTING)):
        try:
            with connect() as client:
                client.ping()
            cluster = connect_cluster()
            primaries = len(cluster.get_primaries())
            cluster.close()
        except CourseConnectionError as exc:
            return Check("servers", False, str(exc))
        return Check("servers", True, f"{REDIS_URL_SETTING} and {CLUSTER_URL_SETTING} answer ({primaries} primaries)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-doctor-") as folder:
        try:
            stack = runtime.up(folder)
            formed = runtime._cluster_ready(stack.cluster)
        except (ServerError, TimedOut) as exc:  # no server, or the cluster did not form in time
            return Check("servers", False, f"{exc} Then run the doctor again.")
        finally:
            runtime.down(folder)
    if not formed:
        return Check("servers", False, "the cluster did not form with its replicas: send the instructor this output")
    return Check("servers", True, f"{stack.engine}: standalone + cluster of {runtime.PRIMARIES} primaries "
                                  f"with replicas, started in {time.perf_counter() - started:.1f} s")


def check_jupyter() -> Check:
    missing = [name for name in ("jupyterlab", "ipywidgets", "jupyterlab_widgets", "ipykernel")
               if importlib.util.find_spec(name) is None]
    if missing:
        return Check("jupyterlab", False, f"missing {', '.join(missing)}: run `make lab` once (it installs them), "
                                          "or `pip install -e .` in the course folder")
    return Check("jupyterlab", True, "JupyterLab, ipykernel and the widgets front end are installed")


def check_lab_port(port: int = LAB_PORT) -> Check:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return Check("lab port", False, f"port {port} is taken (another JupyterLab?): stop it, or start the "
                                            f"course on another port: `python -m course_lib lab --port {port + 11}`")
    return Check("lab port", True, f"{port} is free for JupyterLab")


def check_room() -> Check | None:
    """When this machine has joined a workshop: the room answers, with this learner's credentials."""
    from course_lib import workshop
    from course_lib.seat import joined

    try:
        seat = joined()
    except ValueError as exc:
        return Check("room", False, f"the saved join line is unusable: {exc}")
    if seat is None:
        return None
    try:
        with workshop.room_client(seat) as client:
            whoami = client.acl_whoami()
    except redis.AuthenticationError:
        return Check("room", False, f"the room at {seat.address} refused {seat.learner}'s password: "
                                    "paste your join line again (`python -m course_lib join ...`), exactly as sent")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return Check("room", False, f"cannot reach the room at {seat.address}: check you are on the workshop's "
                                    "network, and ask the instructor whether the room is started")
    return Check("room", True, f"{whoami}@{seat.address}")


def run(lab_port: int = LAB_PORT, echo: Callable[[str], None] = print) -> bool:
    """Run every check, printing each as it finishes and the status line last; True when ready."""
    steps = [check_python, check_platform, check_binary, check_servers, check_jupyter,
             lambda: check_lab_port(lab_port), check_room]
    results: list[Check] = []
    for step in steps:
        result = step()
        if result is None:
            continue
        results.append(result)
        echo(f"{'ok  ' if result.ok else 'FIX '} {result.name:<14} {result.detail}")
    echo(status_line(results))
    return all(result.ok for result in results)


def status_line(results: list[Check]) -> str:
    """`doctor: READY - ...` or `doctor: NOT READY - failed: ...`: short enough for a chat message."""
    failed = [result.name for result in results if not result.ok]
    if failed:
        return f"doctor: NOT READY - failed: {', '.join(failed)}"
    found = {result.name: result.detail for result in results}
    parts = [found["server binary"].split(" (")[0], f"Python {found['python']}", platform.system()]
    if "room" in found:
        parts.append(f"room {found['room']}")
    return "doctor: READY - " + ", ".join(parts)
