"""Resetting a chapter: the committed notebook comes back from git, the learner's copy is kept beside it
under a name the suite and git ignore, and a wrong chapter number gets a clear error."""

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from course_lib import reset

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.engine_agnostic


@pytest.fixture
def course(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("00_getting_started.ipynb", "05_rate_limiting.ipynb"):
        (tmp_path / "notebooks" / name).write_text(f'{{"cells": [], "name": "{name}"}}')
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True, timeout=30)
    return tmp_path


def test_reset_restores_the_committed_notebook_and_keeps_the_learners(course):
    chapter = course / "notebooks" / "05_rate_limiting.ipynb"
    committed = chapter.read_text()
    chapter.write_text('{"cells": ["my work"]}')
    path, copy = reset.reset("5", course, now=datetime(2026, 11, 30, 14, 5, 0))
    assert path == chapter and chapter.read_text() == committed
    assert copy.name == "mine-05_rate_limiting-20261130-140500.ipynb" and copy.read_text() == '{"cells": ["my work"]}'
    assert reset.reset("05", course) == (chapter, None)  # unchanged: nothing to keep


def test_a_wrong_chapter_says_which_exist(course):
    with pytest.raises(reset.ResetError, match="no chapter 7; the chapters are 00, 05"):
        reset.reset("7", course)
    with pytest.raises(reset.ResetError, match="a chapter is a number"):
        reset.reset("five", course)


def test_learner_copies_are_ignored_by_git_and_the_suite():
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/mine-05_rate_limiting-20261130-140500.ipynb"],
                             cwd=REPO, timeout=30)
    assert ignored.returncode == 0
    assert "--ignore-glob=notebooks/mine-*" in (REPO / "pyproject.toml").read_text()


def test_the_cli_reports_a_missing_chapter():
    result = subprocess.run([sys.executable, "-m", "course_lib", "reset", "99"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "there is no chapter 99" in result.stderr
