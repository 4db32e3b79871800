"""Checkers for the learners' exercises, one module per chapter (`exercises/<topic>.py`).

The pattern:
- the notebook has a stub the learner fills in; unsolved, its body raises NotImplementedError;
- `check(checker, solution)` runs a chapter's checker against a live server on the chapter's
  private exercise prefix (`course:<topic>:exercise:`), and prints one deterministic line:
  passed, not solved yet, or failed with a hint;
- reference solutions live in `exercises/solutions/<topic>.py`; each chapter's tests prove every
  checker passes its reference solution and fails at least one plausible wrong answer.

A checker is a function `check_<name>(client, solution) -> None` in `exercises/<topic>.py` that
raises `ExerciseFailed(hint)` when the solution is wrong; its docstring's first line is the
exercise's title. It writes only keys under `exercise_prefix(checker)`.

In a notebook:
    from course_lib.exercises import check
    from course_lib.exercises.data_types import check_top_scores
    check(check_top_scores, top_scores)   # prints e.g. "[TODO] Top scores: not solved yet - hint: ..."
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from course_lib import progress, workshop
from course_lib.keys import delete_prefix


class ExerciseFailed(AssertionError):
    """The solution gave a wrong answer; the message is a hint for the learner, not the answer."""


@dataclass(frozen=True)
class Outcome:
    title: str
    status: str  # "passed", "not solved yet" or "failed"
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __str__(self) -> str:
        mark = {"passed": "PASS", "not solved yet": "TODO", "failed": "FAIL"}[self.status]
        return f"[{mark}] {self.title}: {self.status}" + (f" - hint: {self.hint}" if self.hint else "")


def returned(value, kinds: type | tuple[type, ...], what: str):
    """`value` if the learner's function returned one of `kinds`; else a hint saying it must return `what`."""
    if isinstance(value, kinds):
        return value
    if value is None:
        raise ExerciseFailed(f"your function returned None; it must return {what} (is a `return` missing?)")
    raise ExerciseFailed(f"your function must return {what}, it returned {type(value).__name__} {value!r:.60}")


def exercise_prefix(checker: Callable) -> str:
    """The keys a checker may write: `course:<topic>:exercise:`, topic being its module's name."""
    return f"course:{checker.__module__.rsplit('.', 1)[-1]}:exercise:"


def evaluate(checker: Callable, client, solution: Callable) -> Outcome:
    """Run `checker(client, solution)` on an emptied exercise prefix; never raises for the learner's bugs."""
    title = progress.title(checker)
    prefix = exercise_prefix(checker)
    delete_prefix(client, prefix)
    try:
        checker(client, solution)
    except NotImplementedError:
        return Outcome(title, "not solved yet", "replace `raise NotImplementedError` with your code")
    except ExerciseFailed as failure:
        return Outcome(title, "failed", str(failure))
    except Exception as error:  # the learner's code crashed: say how, briefly
        return Outcome(title, "failed", f"your function raised {type(error).__name__}: {error}")
    finally:
        delete_prefix(client, prefix)
    return Outcome(title, "passed")


def check(checker: Callable, solution: Callable, client=None) -> Outcome:
    """Evaluate a learner's `solution` with `checker`, record it (`course_lib.progress`), print the one-line outcome, and return it.

    A learner who joined a workshop room also reports the outcome to the room's board
    (`course_lib.workshop.report`: best-effort, at most about a second, prints nothing), and is
    checked on the room unless the chapter runs on the learner's own server (`Chapter.own_server`) or
    the checker reads a server-wide statistic (`reads_server_statistics`), which others would disturb.
    """
    if client is None:
        from course_lib.chapters import chapter
        from course_lib.connection import connect

        own = (chapter(checker.__module__.rsplit(".", 1)[-1]).own_server
               or getattr(checker, "reads_server_statistics", False))
        client = connect(room=not own)
    outcome = evaluate(checker, client, solution)
    try:
        progress.record(checker, outcome.status)
    except OSError:  # progress is a convenience: a read-only runtime folder must not break the check
        pass
    print(outcome)
    workshop.report(progress.exercise_id(checker), outcome.status)  # to the room's board, if joined; silent
    return outcome
