"""Hints and solutions: every exercise has two graded hints and a reference solution; hints never show
code; the solution is shown once the exercise passed, or on explicit confirmation only."""

import pytest

from course_lib import progress, settings
from course_lib.exercises.hints import HINTS, SOLUTIONS, hint, show_solution, solution
from course_lib.exercises.transactions import check_deduct
from course_lib.exercises.solutions.transactions import deduct

ALL = [checker for topic in progress.CHAPTERS.values() for checker in progress.exercises(topic)]


@pytest.mark.parametrize("checker", ALL, ids=progress.exercise_id)
def test_every_exercise_has_two_hints_and_a_solution(checker):
    exercise = progress.exercise_id(checker)
    assert len(HINTS[exercise]) == 2 and all(len(text) > 40 for text in HINTS[exercise])
    assert not any(marker in text for text in HINTS[exercise] for marker in ("def ", "lambda ", "```", "\n"))
    assert callable(solution(checker)) and solution(checker).__name__ == SOLUTIONS[exercise]


def test_no_hint_or_solution_for_an_exercise_that_is_gone():
    assert set(HINTS) == set(SOLUTIONS) == {progress.exercise_id(checker) for checker in ALL}


def test_hint_prints_the_level_asked_for(capsys):
    hint(check_deduct, 2)
    assert capsys.readouterr().out.startswith("Hint 2 of 2 for 'A deduction that never overdraws': WATCH")
    hint(check_deduct, 3)
    assert capsys.readouterr().out.strip() == "There are 2 hints (1 to 2); then show_solution(check_deduct)."


def test_the_solution_waits_for_a_pass_or_a_confirmation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(settings.PROGRESS_FILE_SETTING, str(tmp_path / "progress.json"))
    assert show_solution(check_deduct) is None
    assert "has not passed yet" in capsys.readouterr().out
    assert "def deduct(" in show_solution(check_deduct, confirm=True).data
    progress.record(check_deduct, "passed")
    assert show_solution(check_deduct).data == show_solution(check_deduct, confirm=True).data
    assert solution(check_deduct) is deduct
