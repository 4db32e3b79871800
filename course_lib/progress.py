"""A learner's progress through the exercises, recorded by every `check()` and kept out of the notebooks.

`check()` (in `course_lib.exercises`) records each outcome in one small JSON file: `progress.json` in
the runtime folder, or the file `COURSE_PROGRESS_FILE` names (the test suite points it elsewhere, so
running the tests never touches a learner's progress). An exercise counts as solved once it has
passed, even if a later edit breaks it again; its last outcome is kept beside that.

`python -m course_lib progress` and `table()` (shown in notebook 00) print solved/total per chapter
and the next unsolved exercise.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from course_lib.settings import PROGRESS_FILE_SETTING


def _chapters_with_exercises() -> dict[str, str]:
    from course_lib.chapters import CHAPTERS as ALL

    return {c.number: c.topic for c in ALL if importlib.util.find_spec(f"course_lib.exercises.{c.topic}")}


# Chapter number -> the topic that names its notebook, module and checkers (those with exercises).
CHAPTERS = _chapters_with_exercises()


def progress_file() -> Path:
    """Where progress is kept: `COURSE_PROGRESS_FILE`, else `progress.json` in the runtime folder."""
    chosen = os.environ.get(PROGRESS_FILE_SETTING)
    if chosen:
        return Path(chosen)
    from course_lib.runtime import runtime_dir

    return runtime_dir() / "progress.json"


def exercises(topic: str) -> list[Callable]:
    """The checkers of one chapter, in the order the notebook asks for them."""
    module = importlib.import_module(f"course_lib.exercises.{topic}")
    return [value for name, value in vars(module).items()
            if name.startswith("check_") and callable(value) and value.__module__ == module.__name__]


def exercise_id(checker: Callable) -> str:
    """`transactions.check_deduct`: the chapter's topic and the checker's name."""
    return f"{checker.__module__.rsplit('.', 1)[-1]}.{checker.__name__}"


def title(checker: Callable) -> str:
    """The exercise's title: the first line of its checker's docstring."""
    return (checker.__doc__ or checker.__name__).strip().splitlines()[0]


def load() -> dict:
    """Everything recorded so far: {exercise id: {"status", "solved", "at"}}; {} before the first check."""
    try:
        return json.loads(progress_file().read_text())
    except FileNotFoundError:
        return {}
    except ValueError:  # a file cut short by a crash: progress is a convenience, start again
        return {}


def record(checker: Callable, status: str) -> None:
    """Remember a check's outcome ("passed", "failed" or "not solved yet"); solved stays solved."""
    path = progress_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = load()
    previous = entries.get(exercise_id(checker), {})
    entries[exercise_id(checker)] = {
        "status": status,
        "solved": previous.get("solved", False) or status == "passed",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Written aside and renamed: two kernels checking at once never leave half a file.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(entries, handle, indent=1, sort_keys=True)
    os.replace(handle.name, path)


def rows() -> list[dict]:
    """One row per chapter: number, topic, solved, total, and the title of the next unsolved exercise."""
    entries = load()
    table = []
    for number, topic in CHAPTERS.items():
        checkers = exercises(topic)
        unsolved = [c for c in checkers if not entries.get(exercise_id(c), {}).get("solved")]
        table.append({"chapter": number, "topic": topic, "solved": len(checkers) - len(unsolved),
                      "total": len(checkers), "next": title(unsolved[0]) if unsolved else ""})
    return table


def table() -> str:
    """The progress table as text, and what to do next."""
    chapters = rows()
    lines = [f"{'chapter':<20} {'solved':>6}  next"]
    for row in chapters:
        lines.append(f"{row['chapter'] + ' ' + row['topic']:<20} {row['solved']:>3}/{row['total']:<2}  {row['next']}")
    todo = [row for row in chapters if row["next"]]
    solved, total = sum(row["solved"] for row in chapters), sum(row["total"] for row in chapters)
    lines.append(f"solved {solved} of {total} exercises" +
                 (f"; next: chapter {todo[0]['chapter']}, {todo[0]['next']}" if todo else "; all solved"))
    return "\n".join(lines)
