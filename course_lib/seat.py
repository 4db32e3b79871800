"""A learner's seat in a workshop room: the join line, where it is kept, and the channels it gives.

A join line is `redis://<learner>:<password>@<host>:<port>/<db>`. `python -m course_lib join <line>`
keeps it (owner-only) in the runtime folder; `COURSE_WORKSHOP_URL` overrides what was kept, and
`off` switches the workshop off (the test suite sets it, so tests never reach a room).

A joined learner's notebooks use the room's server (`connection.connect()`), in the learner's own
database: their keys keep the course's names (`course:<chapter>:...`). Pub/Sub channels belong to
no database, so a learner's channels carry the learner's name: `keys.channel("pubsub", "news")` is
`course:alice:pubsub:news` for alice, the only channels her room user may use.

This module is the small part both sides need: `workshop` (the room) and `keys` / `connection`
(the notebooks' side) import it, and it imports neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from course_lib.settings import WORKSHOP_URL_SETTING

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,31}")  # a learner's name: a safe ACL user and key part


@dataclass(frozen=True)
class Seat:
    """A learner's place in a room, parsed from a join line."""

    url: str
    learner: str
    password: str
    host: str
    port: int
    db: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_join_line(line: str) -> Seat:
    """`redis://alice:<password>@host:port/db` -> Seat.

    Raises:
        ValueError: the line is not a join line (the message says what it should look like).
    """
    parts = urlsplit(line.strip())
    try:
        port, db = parts.port, int(parts.path.strip("/") or 0)
    except ValueError:
        port = db = None
    if parts.scheme != "redis" or not parts.username or not parts.password or not parts.hostname or not port \
            or db is None or not NAME_PATTERN.fullmatch(parts.username):
        raise ValueError("a join line looks like redis://<name>:<password>@<host>:<port>/<db>: "
                         "copy the whole line the instructor sent")
    return Seat(url=line.strip(), learner=parts.username, password=parts.password, host=parts.hostname, port=port, db=db)


def seat_file() -> Path:
    """Where `join` keeps the line: in the runtime folder, beside the embedded servers."""
    from course_lib.runtime import runtime_dir  # runtime starts servers; only this path is needed from it

    return runtime_dir() / "workshop.json"


def joined() -> Seat | None:
    """This machine's seat: `COURSE_WORKSHOP_URL`, else what `join` kept; None outside a workshop
    (and when the setting is `off`).

    Raises:
        ValueError: the setting or the kept line is not a join line.
    """
    line = os.environ.get(WORKSHOP_URL_SETTING, "").strip()
    if line == "off":
        return None
    if not line:
        with contextlib.suppress(OSError, ValueError, KeyError):
            line = json.loads(seat_file().read_text())["url"]
    return parse_join_line(line) if line else None
