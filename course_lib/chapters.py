"""The course's chapters, and the one shape every chapter notebook has.

Every `notebooks/NN_topic.ipynb` opens with a generated header cell (title; previous · course map ·
next; what the chapter covers; what to know before; about how long it takes), then the chapter's own
introduction, and it ends the same way:

    ## Summary  ->  ## Exercises (### Exercise 1 · <title>, ...)  ->  ## Clean up (code)  ->  navigation

`python -m course_lib shape` writes the generated cells (markdown only: no output changes, so the
notebook needs no re-run); `problems()` says where a notebook has drifted, and the test suite fails
on any. The generated cells carry a tag in their metadata, which is how they are found again.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
HEADER_TAG, NAVIGATION_TAG = "chapter-header", "chapter-navigation"
COURSE_MAP = "[Course map](../README.md#course-map)"


@dataclass(frozen=True)
class Chapter:
    number: str
    topic: str
    title: str
    covers: str  # one sentence: what the learner does in it
    before: str  # what to know first
    minutes: int  # about how long, reading and running, without the exercises
    # Why, in a workshop, the chapter runs on the learner's own server instead of the room ("": on the room).
    own_server: str = ""

    @property
    def notebook(self) -> str:
        return f"{self.number}_{self.topic}.ipynb"

    @property
    def link(self) -> str:
        return f"[{self.number} {self.title}]({self.notebook})"


CHAPTERS = [
    Chapter("00", "getting_started", "Getting started", "which server you talk to, your first commands, key names, "
            "timeouts and retries, a round trip measured, and a command playground", "some Python", 20),
    Chapter("01", "data_types", "Data types", "strings and counters, hashes, lists, sets and sorted sets, and what "
            "each command costs as the data grows", "chapter 00", 45),
    Chapter("02", "caching", "Caching", "cache-aside in front of a really slow query, expiry and jitter, "
            "invalidation, stampedes, client-side caching and eviction, all measured", "chapters 00-01", 60),
    Chapter("03", "pubsub", "Pub/Sub", "fan-out to several app servers, patterns, what is lost when nobody listens "
            "and how a stream recovers it", "chapters 00-01", 40,
            own_server="patterns and notification settings are server-wide, which a shared room cannot give each "
                       "learner"),
    Chapter("04", "streams", "Streams", "consumer groups, acknowledgements, crash recovery, dead letters and "
            "trimming", "chapters 00-01 (03 helps)", 50),
    Chapter("05", "rate_limiting", "Rate limiting", "five limiters in Lua (GCRA included), the guide's racy ones failing live, an "
            "oracle, and a web app answering 429", "chapters 00-01 (08's Lua helps)", 50),
    Chapter("06", "sessions", "Sessions", "a session store with sliding expiry, log out everywhere, unguessable and "
            "rotated ids, over real HTTP", "chapters 00-01, 05's web app", 40),
    Chapter("07", "pipelines", "Pipelines", "round trips counted, batch size against throughput, and why a pipeline "
            "is not a transaction", "chapters 00-01", 30),
    Chapter("08", "transactions", "Transactions", "WATCH/MULTI/EXEC under real contention, no rollback, and Lua as "
            "the alternative", "chapters 00-01, 07", 45),
    Chapter("09", "cluster", "Redis Cluster", "hash slots and tags, MOVED and ASK, a primary killed while clients "
            "write, and a split brain", "chapters 00-01, 07-08", 50),
    Chapter("10", "persistence", "Persistence and replication", "RDB and AOF policies, the writes a kill loses "
            "counted, restarts, and replication lag", "chapters 00-01, 09 helps", 40),
]


def chapter(topic: str) -> Chapter:
    return next(c for c in CHAPTERS if c.topic == topic)


def header(c: Chapter) -> str:
    """The generated first cell of chapter `c`."""
    workshop = f" **In a workshop:** it runs on your own machine's server: {c.own_server}." if c.own_server else ""
    return (f"# {c.number} · {c.title}\n\n{navigation(c)}\n\n"
            f"**In this chapter:** {c.covers}. **Before you start:** {c.before}. "
            f"**Time:** about {c.minutes} minutes, plus the exercises.{workshop}")


def navigation(c: Chapter) -> str:
    """previous · course map · next, as links between the notebooks."""
    index = CHAPTERS.index(c)
    parts = [f"← {CHAPTERS[index - 1].link}" if index else "", COURSE_MAP,
             f"{CHAPTERS[index + 1].link} →" if index + 1 < len(CHAPTERS) else ""]
    return " · ".join(part for part in parts if part)


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _tagged(cell: dict, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def _markdown(text: str, tag: str) -> dict:
    return {"cell_type": "markdown", "id": tag, "metadata": {"tags": [tag]}, "source": text.splitlines(True)}


def _heading(cell: dict, prefix: str) -> bool:
    return cell["cell_type"] == "markdown" and _source(cell).startswith(prefix)


def _title(topic: str, checker_name: str) -> str:
    """An exercise's title, from its checker's docstring."""
    from course_lib import progress  # progress reads this module's table: imported late

    return progress.title(getattr(importlib.import_module(f"course_lib.exercises.{topic}"), checker_name))


def problems(notebook: dict, c: Chapter) -> list[str]:
    """Where `notebook` differs from the chapter shape (empty when it has it)."""
    cells = notebook["cells"]
    found = []
    if not cells or not _tagged(cells[0], HEADER_TAG) or _source(cells[0]) != header(c):
        found.append("the first cell is not the generated header (run `python -m course_lib shape`)")
    if not cells or not _tagged(cells[-1], NAVIGATION_TAG) or _source(cells[-1]) != navigation(c):
        found.append("the last cell is not the generated navigation (run `python -m course_lib shape`)")
    order = [name for cell in cells for name, prefix in (("summary", "## Summary"), ("exercises", "## Exercises"),
                                                            ("clean up", "## Clean up")) if _heading(cell, prefix)]
    expected = ["summary", "clean up"] if c.number == "00" else ["summary", "exercises", "clean up"]
    if order != expected:
        found.append(f"the closing sections are {order}, not {expected} (each once, in that order)")
    elif cells[-2]["cell_type"] != "code":
        found.append("the cell before the navigation must be the clean-up code")
    checkers = re.findall(r"check\((check_\w+)", "".join(_source(cell) for cell in cells if cell["cell_type"] == "code"))
    expected_titles = [f"### Exercise {n} · {_title(c.topic, name)}" for n, name in enumerate(checkers, 1)]
    titles = [_source(cell).splitlines()[0] for cell in cells if _heading(cell, "### Exercise")]
    if titles != expected_titles:
        found.append(f"exercise headings {titles}, expected {expected_titles}: one per check() cell, before its stub")
    return found


def shape(notebook: dict, c: Chapter) -> dict:
    """`notebook` with the generated header and navigation cells written (or rewritten); markdown only."""
    cells = [cell for cell in notebook["cells"] if not _tagged(cell, HEADER_TAG) and not _tagged(cell, NAVIGATION_TAG)]
    intro = _source(cells[0]).splitlines(True)
    # The chapter's own first cell loses the title and navigation lines the header now holds.
    kept = [line for line in intro if not line.startswith("# ") and not re.match(r"\[(← |Course map)", line)]
    cells[0] = {**cells[0], "source": "".join(kept).lstrip("\n").splitlines(True)}
    if not _source(cells[0]).strip():
        cells = cells[1:]
    if cells[-1]["cell_type"] == "markdown" and re.fullmatch(r"(\s*\[[^\]]*\]\([^)]*\)\s*·?\s*)+", _source(cells[-1])):
        cells = cells[:-1]  # a hand-written navigation line, replaced by the generated one
    return {**notebook, "cells": [_markdown(header(c), HEADER_TAG), *cells, _markdown(navigation(c), NAVIGATION_TAG)]}


def shape_all(folder: Path = NOTEBOOKS) -> list[str]:
    """Shape every chapter notebook in place; returns the names of those that changed."""
    changed = []
    for c in CHAPTERS:
        path = folder / c.notebook
        notebook = json.loads(path.read_text())
        shaped = shape(notebook, c)
        if shaped != notebook:
            path.write_text(json.dumps(shaped, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
            changed.append(c.notebook)
    return changed
