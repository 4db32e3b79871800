"""The chapter shape: the generated header and navigation, the closing sections in order, one heading per
exercise; `problems` finds each kind of drift, and `shape` is idempotent and changes markdown only."""

import copy
import json
import re
from pathlib import Path

import pytest

from course_lib import chapters
from course_lib.chapters import CHAPTERS, HEADER_TAG, NAVIGATION_TAG, chapter, problems, shape

pytestmark = pytest.mark.engine_agnostic
REPO = Path(__file__).resolve().parent.parent


def _cell(kind, text):
    cell = {"cell_type": kind, "metadata": {}, "source": text.splitlines(True)}
    if kind == "code":
        cell.update(execution_count=1, outputs=[])
    return cell


def _chapter_08():
    """A small notebook of chapter 08 with the shape's closing sections, before `shape`."""
    cells = [_cell("markdown", "# 08 · Transactions\n\n[← 07 Pipelines](07_pipelines.ipynb)\n\nIntro text."),
             _cell("code", "r = connect()"),
             _cell("markdown", "## Summary\n\nA table."), _cell("markdown", "## Exercises\n\nHow the checks work.")]
    for n, name in enumerate(("check_deduct", "check_transfer"), 1):
        title = {"check_deduct": "A deduction that never overdraws", "check_transfer": "Transfers that conserve the total"}
        cells += [_cell("markdown", f"### Exercise {n} · {title[name]}\n\nDo it."), _cell("code", "def stub(): ..."),
                  _cell("code", f"outcome = check({name}, stub)")]
    cells += [_cell("markdown", "## Clean up"), _cell("code", 'delete_prefix(r, "course:transactions:")')]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_shape_writes_header_and_navigation_and_keeps_the_rest():
    notebook = _chapter_08()
    shaped = shape(notebook, chapter("transactions"))
    assert problems(shaped, chapter("transactions")) == []
    first, intro, last = shaped["cells"][0], shaped["cells"][1], shaped["cells"][-1]
    assert first["metadata"]["tags"] == [HEADER_TAG] and "".join(first["source"]).startswith("# 08 · Transactions\n")
    assert "".join(intro["source"]) == "Intro text."  # title and hand-written navigation moved to the header
    assert last["metadata"]["tags"] == [NAVIGATION_TAG]
    assert "".join(last["source"]) == ("← [07 Pipelines](07_pipelines.ipynb) · [Course map](../README.md#course-map) · "
                                       "[09 Redis Cluster](09_cluster.ipynb) →")
    assert [c for c in shaped["cells"] if c["cell_type"] == "code"] == \
        [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert shape(shaped, chapter("transactions")) == shaped


@pytest.mark.parametrize("drift, complaint", [
    (lambda cells: cells.pop(-2), "clean-up code"),
    (lambda cells: cells.pop(-1), "navigation"),
    (lambda cells: cells.insert(2, cells.pop(cells.index(next(c for c in cells if "## Summary" in "".join(c["source"]))))),
     None),  # Summary moved earlier but still before Exercises: fine
    (lambda cells: cells.append(cells.pop(next(i for i, c in enumerate(cells) if "## Summary" in "".join(c["source"])))),
     "closing sections"),
    (lambda cells: cells.__setitem__(5, _cell("markdown", "**Exercise 1 — a deduction.** Do it.")), "exercise headings"),
    (lambda cells: cells.__setitem__(0, _cell("markdown", "# 08 · Transactions")), "header"),
])
def test_problems_finds_each_drift(drift, complaint):
    shaped = shape(_chapter_08(), chapter("transactions"))
    drifted = copy.deepcopy(shaped)
    drift(drifted["cells"])
    found = problems(drifted, chapter("transactions"))
    assert (complaint is None and not found) or any(complaint in problem for problem in found), found


def test_every_chapter_has_a_notebook_and_the_table_is_in_order():
    assert [c.number for c in CHAPTERS] == [f"{n:02d}" for n in range(len(CHAPTERS))]
    assert sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")) == [c.notebook for c in CHAPTERS]
    assert chapters.navigation(CHAPTERS[0]).startswith("[Course map]")
    assert chapters.navigation(CHAPTERS[-1]).endswith("[Course map](../README.md#course-map)")


@pytest.mark.parametrize("c", CHAPTERS, ids=lambda c: c.notebook)
def test_every_notebook_has_the_chapter_shape(c):
    notebook = json.loads((REPO / "notebooks" / c.notebook).read_text())
    assert problems(notebook, c) == []
    assert shape(notebook, c) == notebook  # `python -m course_lib shape` would change nothing


@pytest.mark.parametrize("c", [c for c in CHAPTERS if c.own_server], ids=lambda c: c.notebook)
def test_a_chapter_on_the_learners_own_server_says_so_and_connects_there(c):
    notebook = json.loads((chapters.NOTEBOOKS / c.notebook).read_text())
    assert "**In a workshop:**" in "".join(notebook["cells"][0]["source"])
    calls = [line for cell in notebook["cells"] if cell["cell_type"] == "code"
             for line in "".join(cell["source"]).splitlines() if re.search(r"\bconnect\(", line)]
    assert calls and all("room=False" in line for line in calls), calls
