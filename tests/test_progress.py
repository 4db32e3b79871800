"""Progress: every check() records its outcome in one file outside the notebooks; solved stays solved;
the table counts each chapter's exercises and names the next one; the CLI prints the same table."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import progress, settings
from course_lib.exercises import check
from course_lib.exercises.transactions import check_deduct, check_transfer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def progress_file(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv(settings.PROGRESS_FILE_SETTING, str(path))
    return path


def _unsolved(*args):
    raise NotImplementedError


def test_check_records_the_outcome_and_solved_stays_solved(r, progress_file):
    from course_lib.exercises.solutions.transactions import deduct

    check(check_deduct, _unsolved, client=r)
    assert progress.load()["transactions.check_deduct"]["status"] == "not solved yet"
    check(check_deduct, deduct, client=r)
    check(check_deduct, _unsolved, client=r)  # the learner breaks it again later
    entry = json.loads(progress_file.read_text())["transactions.check_deduct"]
    assert entry["status"] == "not solved yet" and entry["solved"] is True


def test_rows_count_every_chapter_and_name_the_next_exercise(progress_file):
    progress.record(check_deduct, "passed")
    row = next(row for row in progress.rows() if row["topic"] == "transactions")
    assert row == {"chapter": "08", "topic": "transactions", "solved": 1, "total": 2,
                   "next": progress.title(check_transfer)}
    assert sum(row["total"] for row in progress.rows()) == sum(len(progress.exercises(t)) for t in progress.CHAPTERS.values())
    assert progress.table().splitlines()[-1] == (f"solved 1 of {sum(r['total'] for r in progress.rows())} exercises; "
                                                 f"next: chapter 01, {progress.rows()[0]['next']}")


def test_a_damaged_file_starts_again(progress_file):
    progress_file.write_text('{"transactions.check_deduct": {"sol')
    assert progress.load() == {}
    progress.record(check_deduct, "failed")
    assert progress.load()["transactions.check_deduct"]["solved"] is False


def test_every_chapter_with_exercises_is_in_the_table():
    for notebook in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        number, topic = re.match(r"(\d\d)_(.+)\.ipynb", notebook.name).groups()
        if "check(check_" in notebook.read_text():
            assert progress.CHAPTERS.get(number) == topic, notebook.name
            assert progress.exercises(topic), f"{topic} has no check_* functions"


def test_the_cli_prints_the_table(progress_file):
    progress.record(check_deduct, "passed")
    result = subprocess.run([sys.executable, "-m", "course_lib", "progress"], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == progress.table()
    assert re.search(r"^08 transactions\s+1/2\s+Transfers", result.stdout, re.M)
