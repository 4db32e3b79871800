"""Session set-up shared by the unit tests and the notebooks run under nbval.

The embedded servers are started once per pytest session (or the external ones named by
COURSE_REDIS_URL / COURSE_CLUSTER_URL are used) and their settings are exported to os.environ
before any notebook kernel starts, so every kernel nbval launches talks to the same servers.
The session leases the servers; its end (or its death, via the watchdog) stops what it started.

`make test` runs in parallel (pytest-xdist, `-n` in pyproject.toml): most tests wait on servers
(failovers, expiries, fsyncs) rather than compute, so workers overlap well even on 2 cores. Each
worker leases a stack of its own, in `<runtime folder>-<worker>`, because tests start by deleting
`course:` keys and read server-wide statistics; each file (a notebook's cells, a test module's
module-level set-up) stays on one worker (`--dist loadfile`). External servers are one shared stack,
so with them the suite must run serially (`-n 0`), which the compose configuration does.
"""

import os
import shutil
import tempfile

import pytest

from course_lib import runtime
from course_lib.settings import (CLUSTER_URL_SETTING, PROGRESS_FILE_SETTING, REDIS_URL_SETTING, RUNTIME_DIR_SETTING,
                                 WORKSHOP_URL_SETTING)


def _worker(config) -> str | None:
    return getattr(config, "workerinput", {}).get("workerid")


def _parallel_controller(config) -> bool:
    return _worker(config) is None and bool(getattr(config.option, "numprocesses", None))


def pytest_sessionstart(session):
    # The notebooks' check() cells record outcomes: into a file of the session's, never the learner's.
    session.config.progress_folder = tempfile.mkdtemp(prefix="course-progress-")
    os.environ[PROGRESS_FILE_SETTING] = os.path.join(session.config.progress_folder, "progress.json")
    # Nor do they report to a workshop room this machine has joined (a test that wants a room sets its own).
    os.environ.setdefault(WORKSHOP_URL_SETTING, "off")
    external = all(os.environ.get(name) for name in (REDIS_URL_SETTING, CLUSTER_URL_SETTING))
    session.config.course_stack = None
    if _parallel_controller(session.config):
        if external:
            raise pytest.UsageError("external servers are one stack shared by every worker: run serially (-n 0)")
        return  # it only hands out tests; each worker starts its own servers
    if external:
        return
    if _worker(session.config):
        os.environ[RUNTIME_DIR_SETTING] = f"{runtime.runtime_dir()}-{_worker(session.config)}"
    stack = runtime.up(owner=os.getpid())
    session.config.course_stack = stack
    for name, value in stack.settings().items():
        os.environ.setdefault(name, value)


def pytest_report_header(config):
    stack = getattr(config, "course_stack", None)
    if _parallel_controller(config):
        return "course servers: one embedded stack per worker, in <runtime folder>-<worker>"
    if stack is None:
        return f"course servers: external ({os.environ[REDIS_URL_SETTING]}, cluster {os.environ[CLUSTER_URL_SETTING]})"
    return f"course servers: embedded {stack.engine} ({stack.binary}), runtime {stack.folder}"


def pytest_sessionfinish(session):
    shutil.rmtree(session.config.progress_folder, ignore_errors=True)
    stack = getattr(session.config, "course_stack", None)
    if stack is not None:
        runtime.release(os.getpid(), stack.folder)
