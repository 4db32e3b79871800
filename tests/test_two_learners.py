"""Two learners run the whole course at the same time against one workshop room.

Each learner is a `pytest --nbval` of every notebook (strict: the committed outputs), in a process of
its own with the learner's join line (`COURSE_WORKSHOP_URL`) and a runtime folder of its own for
what stays on a learner's machine (the cluster, scratch servers, `connect(room=False)`). Their
standalone server is the room, where each has a database and channels of their own: a key, a
channel, a consumer group or a cleanup of one that touched the other's would change an output.
The one sanitized difference is the learner's name in their channels.

The room runs the bundled Valkey (the only engine that gives a learner a database of their own);
the learners' own servers are the session's engine. Minutes long: `-m two_learners` runs it.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from course_lib import progress, workshop

pytestmark = pytest.mark.two_learners

REPO = Path(__file__).resolve().parent.parent
LEARNERS = ("ada", "grace")
TIMEOUT = 600  # seconds for the whole course, both learners at once


def _sanitize_file(folder: Path) -> Path:
    """The notebooks' sanitizers, and the learners' names in their channels (`course:ada:` -> `course:`)."""
    names = "|".join(LEARNERS)
    path = folder / "sanitize.cfg"
    path.write_text((REPO / "notebooks" / "sanitize.cfg").read_text()
                    + f"\n[learner-channel]\nregex: course:({names}):\nreplace: course:\n")
    return path


def test_two_learners_run_the_whole_course_at_once(tmp_path):
    room = workshop.start("\n".join(LEARNERS), folder=tmp_path / "room")
    assert room.engine == "Valkey"
    try:
        sanitize = _sanitize_file(tmp_path)
        runs = {}
        for learner in LEARNERS:
            env = {**os.environ, "COURSE_WORKSHOP_URL": room.join_line(learner),
                   "COURSE_RUNTIME_DIR": str(tmp_path / f"runtime-{learner}")}
            for name in ("COURSE_REDIS_URL", "COURSE_CLUSTER_URL", "PYTEST_XDIST_WORKER"):
                env.pop(name, None)
            log = (tmp_path / f"{learner}.log").open("w")
            command = [sys.executable, "-m", "pytest", "-q", "-n", "0",
                       f"--nbval-sanitize-with={sanitize}", "notebooks"]
            runs[learner] = (subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        deadline = time.monotonic() + TIMEOUT
        failed = {}
        for learner, (process, log) in runs.items():
            try:
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = "timed out"
            log.close()
            if code != 0:
                failed[learner] = f"exit {code}:\n" + (tmp_path / f"{learner}.log").read_text()[-6000:]
        assert not failed, "\n\n".join(f"--- {name} ---\n{text}" for name, text in failed.items())

        # Both learners' check() cells reported to the room's board, each as themselves.
        board = workshop.Board(room)
        board.poll()
        every_exercise = {progress.exercise_id(checker) for topic in progress.CHAPTERS.values()
                          for checker in progress.exercises(topic)}
        for learner in LEARNERS:
            assert set(board.latest[learner]) == every_exercise, learner
        # Every chapter's clean-up ran in the learner's own database and left nothing behind there.
        for learner, seat in room.learners.items():
            with room.instructor_client(db=seat["db"]) as instructor:
                assert instructor.dbsize() == 0, (learner, sorted(instructor.scan_iter(count=1000))[:20])
    finally:
        workshop.stop(tmp_path / "room")
