"""Shared machines and workshops: a password per embedded stack, the room server, joining, the board.

Every test here uses its own runtime folder (or its own room folder), so the session's servers,
which the other tests use, are never touched.
"""

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from course_lib import runtime, settings
from course_lib.concurrency import wait_for
from course_lib.connection import connect, connect_cluster
from course_lib.settings import CLUSTER_URL_SETTING, REDIS_URL_SETTING
from course_lib.servers import AUTH_FILE, pid_alive

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "course_lib", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, **(env or {})})


# --- shared machines: the embedded stack requires a password -------------------------------------

@pytest.fixture(scope="module")
def locked_stack(tmp_path_factory):
    """A stack of its own, as every new stack is (with a password), kept until the module's tests are done."""
    path = tmp_path_factory.mktemp("locked") / "runtime"
    previous = os.environ.pop(settings.PASSWORD_SETTING, None)
    try:
        stack = runtime.up(path)
    finally:
        if previous is not None:
            os.environ[settings.PASSWORD_SETTING] = previous
    yield stack
    runtime.down(path)


def _owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_client_without_the_password_is_refused(locked_stack):
    for server in locked_stack.servers():
        with redis.Redis(port=server.port, socket_timeout=2, retry=None) as stranger:
            with pytest.raises(redis.AuthenticationError):
                stranger.ping()
        with redis.Redis(port=server.port, password="guessed", socket_timeout=2, retry=None) as guesser:
            with pytest.raises(redis.AuthenticationError):
                guesser.ping()


def test_the_password_is_owner_only_and_not_in_the_process_list(locked_stack):
    password = locked_stack.password
    assert password and len(password) >= 40
    assert _owner_only(locked_stack.folder / runtime.PASSWORD_FILE)
    for server in locked_stack.servers():
        assert _owner_only(Path(server.dir) / AUTH_FILE)
        assert password not in Path(f"/proc/{server.pid}/cmdline").read_text()
    assert password not in (locked_stack.folder / "state.json").read_text()


def test_course_clients_and_kernels_use_the_password(locked_stack, monkeypatch):
    # The settings `lab` and the test session export to kernels carry it in the URLs.
    for name, value in locked_stack.settings().items():
        monkeypatch.setenv(name, value)
    with connect() as client:
        assert client.ping()
    cluster = connect_cluster()
    try:
        cluster.set("course:workshop:probe", "1")  # a write reaches a primary through the cluster client
        assert cluster.get("course:workshop:probe") == "1"
    finally:
        cluster.delete("course:workshop:probe")
        cluster.close()
    # Replicas reached their primaries with masterauth: every link is up.
    assert runtime._cluster_ready(locked_stack.cluster)


def test_the_cli_works_and_never_prints_the_password(locked_stack):
    status = _cli("status", "--runtime-dir", str(locked_stack.folder))
    assert status.returncode == 0, status.stderr
    assert locked_stack.password not in status.stdout
    assert "***" in status.stdout and "owner-only" in status.stdout


def test_a_replaced_server_keeps_the_password(locked_stack, monkeypatch):
    monkeypatch.setenv(REDIS_URL_SETTING, locked_stack.redis_url)
    monkeypatch.setenv(CLUSTER_URL_SETTING, locked_stack.cluster_url)
    monkeypatch.setenv(settings.RUNTIME_DIR_SETTING, str(locked_stack.folder))
    os.kill(locked_stack.standalone.pid, 9)
    wait_for(lambda: not pid_alive(locked_stack.standalone.pid), 10, "the killed server to exit")
    with connect() as client:  # connect() replaces the dead embedded server on the same port
        assert client.ping()
    healed = runtime.load(locked_stack.folder)
    assert healed.password == locked_stack.password and healed.redis_url == locked_stack.redis_url
    with redis.Redis(port=healed.standalone.port, socket_timeout=2, retry=None) as stranger:
        with pytest.raises(redis.AuthenticationError):
            stranger.ping()


def test_the_watchdog_stops_a_password_stack(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.PASSWORD_SETTING, raising=False)  # the default: a password
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        stack = runtime.up(tmp_path / "runtime", owner=owner.pid)
        pids = [server.pid for server in stack.servers()]
        assert stack.password
    finally:
        owner.communicate("")  # the owner exits: the watchdog must stop the servers
    try:
        # The watchdog stops the servers, then forgets them: wait for both, the record being last.
        wait_for(lambda: not any(pid_alive(pid) for pid in pids) and not (tmp_path / "runtime" / "state.json").exists(),
                 30, "the watchdog to stop every server and forget the stack")
    finally:
        runtime.down(tmp_path / "runtime")


def test_a_password_unless_the_setting_says_0(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.PASSWORD_SETTING, raising=False)
    password = runtime._new_password(tmp_path)
    assert len(password) >= 40 and _owner_only(tmp_path / runtime.PASSWORD_FILE)
    monkeypatch.setenv(settings.PASSWORD_SETTING, "0")
    assert runtime._new_password(tmp_path) is None and not (tmp_path / runtime.PASSWORD_FILE).exists()


def test_scratch_servers_require_no_password():
    from course_lib.servers import find_binary, scratch_server

    with scratch_server(binary=find_binary()) as server:
        assert server.password is None
        with redis.Redis(port=server.port, socket_timeout=2) as client:
            assert client.ping()


# --- the room: one server, one ACL user per learner ----------------------------------------------

from course_lib import workshop  # noqa: E402
from course_lib.seat import parse_join_line  # noqa: E402
from course_lib.servers import find_binary, free_port  # noqa: E402

LAN = "127.0.0.2"  # a stand-in for the instructor's LAN address: learners connect to it, not to 127.0.0.1


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A room for alice and bob, on the session's engine, bound to 127.0.0.2."""
    folder = tmp_path_factory.mktemp("room")
    started = workshop.start("# the roster\nalice\nbob  # late\n\n", bind=LAN, folder=folder, binary=find_binary())
    yield started
    workshop.stop(folder)


def _learner(room, name, **options):
    seat = parse_join_line(room.join_line(name))
    assert seat.host == LAN
    return workshop.room_client(seat, **options)


@pytest.fixture
def alice(room):
    with _learner(room, "alice") as client:
        yield client


@pytest.fixture
def bob_key(room):
    """A key and a channel of bob's, written by bob; deleted after the test."""
    with _learner(room, "bob") as bob:
        name = workshop.learner_prefix("bob") + "secret"
        bob.set(name, "bob's")
        yield name
        bob.delete(name)
        assert bob.exists(name) == 0


def test_the_room_has_no_open_door(room):
    with redis.Redis(host=LAN, port=room.port, socket_timeout=2, retry=None) as anonymous:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    # The password the server was started with belonged to `default`, which is now off.
    bootstrap = room.server().password
    with redis.Redis(host=LAN, port=room.port, password=bootstrap, socket_timeout=2, retry=None) as old_default:
        with pytest.raises(redis.AuthenticationError):
            old_default.ping()
    with redis.Redis(host=LAN, port=room.port, username="alice", password="guessed", socket_timeout=2, retry=None) as guesser:
        with pytest.raises(redis.AuthenticationError):
            guesser.ping()
    with room.instructor_client() as instructor:
        default = instructor.acl_getuser("default")
    # Off and not `nopass`: with `nopass`, protected mode would refuse learners connecting from the LAN.
    assert "off" in default["flags"] and "nopass" not in default["flags"] and not default["passwords"]


def test_room_files_are_owner_only_and_the_server_holds_no_password(room):
    folder = Path(room.dir).parent
    for name in ("room.json", "credentials.txt"):
        assert _owner_only(folder / name)
    assert (folder / "credentials.txt").read_text().count("redis://") == 2
    with room.instructor_client() as instructor:
        rules = " ".join(instructor.acl_list())
    for seat in room.learners.values():
        assert seat["password"] not in rules
    assert room.instructor not in rules


def test_a_learner_works_in_their_own_namespace(alice):
    own = workshop.learner_prefix("alice") + "counter"
    assert alice.incr(own) == 1
    assert alice.acl_whoami() == "alice"
    alice.delete(own)


@pytest.mark.parametrize("command", [
    ("GET", "{key}"), ("SET", "{key}", "alice's"), ("DEL", "{key}"), ("UNLINK", "{key}"), ("EXISTS", "{key}"),
    ("TYPE", "{key}"), ("EXPIRE", "{key}", "1"), ("RENAME", "{key}", "course:alice:stolen"),
    ("COPY", "{key}", "course:alice:copy"), ("HSET", "{key}", "f", "v"), ("XADD", "{key}", "*", "f", "v"),
    ("DUMP", "{key}"), ("OBJECT", "ENCODING", "{key}"),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "{key}"),
], ids=lambda command: command[0] if command[0] != "OBJECT" else "OBJECT ENCODING")
def test_a_learner_cannot_touch_another_learners_key(alice, bob_key, room, command):
    parts = [part.format(key=bob_key) for part in command]
    if room.engine == "Valkey":
        # alice may name any key, but only in her own database: there bob's key does not exist.
        try:
            reply = alice.execute_command(*parts)
        except redis.ResponseError as exc:
            reply = exc
        assert "bob's" not in str(reply)
        alice.delete(bob_key, "course:alice:stolen", "course:alice:copy")  # what SET, HSET, XADD made in hers
    else:
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.execute_command(*parts)
    with _learner(room, "bob") as bob:
        assert bob.get(bob_key) == "bob's" and bob.ttl(bob_key) == -1


def test_a_script_cannot_reach_a_key_it_did_not_declare(alice, bob_key, room):
    script = f"return redis.call('GET', '{bob_key}')"
    if room.engine == "Valkey":  # a script runs in alice's database too
        assert alice.eval(script, 1, "course:alice:x") is None
    else:
        with pytest.raises(redis.ResponseError, match="can't access|No permissions to access a key"):
            alice.eval(script, 1, workshop.learner_prefix("alice") + "x")


def test_a_learner_cannot_reach_database_0_where_the_boards_are(room):
    """A connection starts in database 0 until its SELECT: alice's rights to keys do not reach there."""
    if room.engine != "Valkey":
        pytest.skip("Redis 7.0 has no database per user: its learners' keys are fenced by name (tested above)")
    seat = parse_join_line(room.join_line("alice"))
    with redis.Redis(host=seat.host, port=seat.port, username="alice", password=seat.password, db=0,
                     socket_timeout=2, decode_responses=True) as in_db_0:
        for command in [("XRANGE", workshop.board_key("bob"), "-", "+"), ("GET", "course:anything"),
                        ("SET", "course:alice:x", "1"), ("XADD", workshop.board_key("bob"), "*", "f", "v"),
                        ("SCAN", "0")]:
            with pytest.raises(redis.exceptions.NoPermissionError):
                in_db_0.execute_command(*command)


@pytest.mark.parametrize("subscribe", [
    ("subscribe", "course:bob:room"), ("psubscribe", "course:bob:*"), ("psubscribe", "*"),
    ("psubscribe", "__keyspace@*"), ("psubscribe", "__keyevent@*"), ("subscribe", "__keyevent@0__:set"),
])
def test_a_learner_cannot_listen_to_another_learners_channels(alice, subscribe):
    method, channel = subscribe
    pubsub = alice.pubsub()
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            getattr(pubsub, method)(channel)
            pubsub.get_message(timeout=2)  # RESP3 delivers the refusal as the reply to (P)SUBSCRIBE
    finally:
        pubsub.close()


def test_a_learner_cannot_publish_to_another_learners_channel(alice):
    with pytest.raises(redis.exceptions.NoPermissionError):
        alice.publish("course:bob:room", "hello from alice")


def test_keyspace_notifications_reach_only_the_keys_owner(alice, room):
    """A learner may subscribe to the notifications of their own keys, and receives only theirs."""
    prefix = workshop.learner_prefix("alice")
    db = room.learners["alice"]["db"]
    # The pattern exactly as granted: on Valkey every key of alice's database, on Redis 7.0 her prefix.
    pattern = f"__keyspace@{db}__:*" if room.engine == "Valkey" else f"__keyspace@{db}__:{prefix}*"
    with room.instructor_client() as instructor:
        instructor.config_set("notify-keyspace-events", "K$")
    pubsub = alice.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.psubscribe(pattern)
        pubsub.get_message(timeout=1)
        with _learner(room, "bob") as bob:
            bob.set("course:bob:noisy", 1)
            bob.delete("course:bob:noisy")
        alice.set(prefix + "watched", 1)
        received = pubsub.get_message(timeout=5)
        assert received["channel"] == f"__keyspace@{db}__:{prefix}watched"  # bob's SET came first and was not seen
        alice.delete(prefix + "watched")
    finally:
        pubsub.close()
        with room.instructor_client() as instructor:
            instructor.config_set("notify-keyspace-events", "")


@pytest.mark.parametrize("command", [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "maxmemory", "1"), ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"), ("MONITOR",), ("ACL", "SETUSER", "alice", "~*"), ("ACL", "LIST"),
    ("ACL", "GETUSER", "bob"), ("CLIENT", "KILL", "USER", "bob"), ("CLIENT", "LIST"), ("CLIENT", "PAUSE", "100"),
    ("FUNCTION", "FLUSH"), ("FUNCTION", "DELETE", "lib"), ("SCRIPT", "FLUSH"), ("SWAPDB", "0", "1"),
    ("KEYS", "*"), ("SAVE",), ("BGREWRITEAOF",), ("REPLICAOF", "127.0.0.1", "1"), ("MODULE", "LIST"),
], ids=lambda command: " ".join(command[:2]) if command[0] in {"CONFIG", "ACL", "CLIENT", "FUNCTION"} else command[0])
def test_a_learner_cannot_run_room_wide_commands(alice, bob_key, room, command):
    # NOPERM from the ACL; DEBUG is refused even before it, since the room disables it outright.
    with pytest.raises(redis.ResponseError, match="(?i)permission|DEBUG command not allowed"):
        alice.execute_command(*command)
    assert room.server().alive()
    with _learner(room, "bob") as bob:
        assert bob.get(bob_key) == "bob's"


def test_what_the_engine_cannot_isolate(alice, bob_key, room):
    """Documented in course_lib.workshop: INFO shows the whole server; PSUBSCRIBE only the exact granted pattern."""
    keyspace = alice.info("keyspace")
    bob_db = f"db{room.learners['bob']['db']}"
    assert keyspace[bob_db]["keys"] >= 1  # bob's key count is visible to alice
    assert int(alice.info("clients")["connected_clients"]) >= 2  # so is how many clients the room has
    if room.engine == "Valkey":  # client-side caching's channel is every learner's (for TrackingCache)
        with _learner(room, "bob") as bob:
            listener = bob.pubsub()
            try:
                listener.subscribe("__redis__:invalidate")
                assert listener.get_message(timeout=2)["type"] == "subscribe"
                assert alice.publish("__redis__:invalidate", "course:caching:price:1") == 1
                assert listener.get_message(timeout=2)["data"] == "course:caching:price:1"
            finally:
                listener.close()
    pubsub = alice.pubsub()
    try:
        pubsub.psubscribe("course:alice:*")  # the granted pattern itself is allowed
        assert pubsub.get_message(timeout=2)["type"] == "psubscribe"
        with pytest.raises(redis.exceptions.NoPermissionError):
            pubsub.psubscribe("course:alice:room:*")  # a narrower pattern of her own is not
            pubsub.get_message(timeout=2)
    finally:
        pubsub.close()


def test_reset_empties_one_learner_and_disconnects_them(room):
    with _learner(room, "alice") as alice, _learner(room, "bob") as bob:
        for index in range(3):
            alice.set(f"course:alice:work:{index}", index)
        bob.set("course:bob:kept", 1)
        alice_id, bob_id = alice.client_id(), bob.client_id()
        assert workshop.reset("alice", folder=Path(room.dir).parent) == 3
        with room.instructor_client() as instructor:
            connected = {int(entry["id"]) for entry in instructor.client_list()}
        assert alice_id not in connected and bob_id in connected
        assert bob.get("course:bob:kept") == "1"
        bob.delete("course:bob:kept")
    with pytest.raises(workshop.RosterError, match="not on this room's roster"):
        workshop.reset("mallory", folder=Path(room.dir).parent)


@pytest.mark.parametrize("roster, problem", [
    ("alice\nalice\n", "'alice' is already on line 1"),
    ("alice\nBob\n", "'Bob' is not a safe name"),
    ("alice\nbob smith\n", "'bob smith' is not a safe name"),
    ("alice\n../etc\n", "'../etc' is not a safe name"),
    ("alice\ncourse:*\n", "is not a safe name"),
    ("instructor\n", "'instructor' is reserved"),
    ("default\n", "'default' is reserved"),
    ("# nobody yet\n\n", "names no learner"),
])
def test_a_bad_roster_starts_nothing(tmp_path, roster, problem):
    with pytest.raises(workshop.RosterError, match=re.escape(problem)):
        workshop.start(roster, folder=tmp_path, binary=find_binary())
    assert workshop.load(tmp_path) is None and not list(tmp_path.iterdir())


def test_every_roster_problem_is_listed_at_once():
    with pytest.raises(workshop.RosterError) as raised:
        workshop.parse_roster("ok_name\nBad\nok_name\n")
    assert "line 2" in str(raised.value) and "line 3" in str(raised.value)


def test_the_workshop_command_line(tmp_path):
    roster = tmp_path / "roster.txt"
    roster.write_text("carol\ndave\n")
    room_dir = str(tmp_path / "room")
    started = _cli("workshop", "--room-dir", room_dir, "start", "--roster", str(roster), "--bind", LAN,
                   env={"COURSE_SERVER_BINARY": find_binary().path})
    try:
        assert started.returncode == 0, started.stderr
        lines = [line for line in started.stdout.splitlines() if "course_lib join redis://" in line]
        assert [line.split(":")[0].strip() for line in lines] == ["carol", "dave"]
        again = _cli("workshop", "--room-dir", room_dir, "start", "--roster", str(roster))
        assert again.returncode == 1 and "already running" in again.stderr
        status = _cli("workshop", "--room-dir", room_dir, "status")
        assert status.returncode == 0 and "carol" in status.stdout and "not connected" in status.stdout
    finally:
        stopped = _cli("workshop", "--room-dir", room_dir, "stop")
    assert stopped.returncode == 0 and "Stopped the room" in stopped.stdout
    assert not list((tmp_path / "room").iterdir())  # record, credentials and the server's folder (auth.conf) are gone
    bad = tmp_path / "bad.txt"
    bad.write_text("carol\ncarol\n")
    refused = _cli("workshop", "--room-dir", room_dir, "start", "--roster", str(bad))
    assert refused.returncode == 1 and "already on line 1" in refused.stderr and "nothing was started" in refused.stderr


# --- joining a room ------------------------------------------------------------------------------

def test_join_checks_the_line_and_keeps_it_owner_only(room, tmp_path):
    env = {settings.RUNTIME_DIR_SETTING: str(tmp_path / "runtime")}
    joined = _cli("join", room.join_line("alice"), env=env)
    assert joined.returncode == 0, joined.stderr
    assert f"as alice" in joined.stdout
    saved = tmp_path / "runtime" / "workshop.json"
    assert _owner_only(saved) and room.learners["alice"]["password"] in saved.read_text()
    wrong = room.join_line("alice").replace(room.learners["alice"]["password"], "not-the-password")
    refused = _cli("join", wrong, env=env)
    assert refused.returncode == 1 and "did not accept" in refused.stderr
    garbled = _cli("join", "alice@somewhere", env=env)
    assert garbled.returncode == 1 and "a join line looks like" in garbled.stderr
    left = _cli("join", "--leave", env=env)
    assert left.returncode == 0 and not saved.exists()


def test_a_joined_learners_notebooks_use_the_room(room, monkeypatch):
    """connect() is the room as the learner, in their database; connect(room=False) and the stack stay local."""
    from course_lib.connection import CourseConnectionError, connect

    monkeypatch.setenv(settings.WORKSHOP_URL_SETTING, room.join_line("alice"))
    monkeypatch.delenv(settings.REDIS_URL_SETTING)
    local = runtime.load(runtime.runtime_dir())
    assert settings.REDIS_URL_SETTING not in local.settings()  # kernels started now follow the join line too
    if room.engine != "Valkey":
        with pytest.raises(CourseConnectionError, match="cannot give each learner a database of their own"):
            connect()
        return
    with connect() as r, connect(room=False) as own:
        assert r.acl_whoami() == "alice"
        assert r.connection_pool.connection_kwargs["db"] == room.learners["alice"]["db"]
        assert r.set("course:getting_started:greeting", "hello, room") and r.dbsize() == 1
        assert own.connection_pool.connection_kwargs["port"] == local.standalone.port
        assert own.get("course:getting_started:greeting") != "hello, room"
        r.delete("course:getting_started:greeting")


def test_an_unreachable_room_gets_the_workshop_advice(room, monkeypatch):
    from course_lib.connection import CourseConnectionError, connect

    line = room.join_line("alice").replace(f":{room.port}/", f":{free_port()}/")
    monkeypatch.setenv(settings.WORKSHOP_URL_SETTING, line)
    monkeypatch.delenv(settings.REDIS_URL_SETTING)
    with pytest.raises(CourseConnectionError, match="the workshop room.*join --leave") as error:
        connect()
    assert room.learners["alice"]["password"] not in str(error.value)


# --- the progress board --------------------------------------------------------------------------

from course_lib.exercises import check  # noqa: E402
from course_lib.exercises.data_types import check_top_scores  # noqa: E402
from course_lib.exercises.solutions.data_types import top_scores  # noqa: E402


def _unsolved(client, board, n):
    raise NotImplementedError


def test_check_reports_to_the_board_and_prints_the_same(room, monkeypatch, capsys):
    check(check_top_scores, top_scores)
    alone = capsys.readouterr().out
    board = workshop.Board(room)
    board.poll()
    monkeypatch.setenv(settings.WORKSHOP_URL_SETTING, room.join_line("alice"))
    check(check_top_scores, top_scores)
    assert capsys.readouterr().out == alone
    check(check_top_scores, _unsolved)
    capsys.readouterr()
    assert board.poll(block_ms=2000) >= 1
    board.poll(block_ms=200)
    assert board.latest["alice"]["data_types.check_top_scores"] == "not solved yet"  # the last outcome
    assert "data_types.check_top_scores" in board.solved["alice"]  # solved stays solved
    rows = board.table().splitlines()
    assert rows[0].split()[:3] == ["learner", "solved", "01.1"]
    assert rows[1].split()[:3] == ["alice", "1", "TODO"] and rows[2].split()[:2] == ["bob", "0"]
    assert all(lag >= 0 for lag in board.lag_ms)


def test_reporting_is_bounded_and_silent_when_the_room_is_gone(room, monkeypatch, capsys):
    from course_lib.servers import free_port
    import time

    nowhere = room.join_line("alice").replace(f":{room.port}/", f":{free_port()}/")
    monkeypatch.setenv(settings.WORKSHOP_URL_SETTING, nowhere)
    started = time.perf_counter()
    assert workshop.report("data_types.check_top_scores", "passed") is False
    assert time.perf_counter() - started < 2 * workshop.REPORT_TIMEOUT + 1
    monkeypatch.setenv(settings.WORKSHOP_URL_SETTING, "not a join line")
    check(check_top_scores, top_scores)
    assert capsys.readouterr().out.startswith("[PASS]")
    # Not joined, and a runtime folder that cannot be made (a file is in the way): still silent.
    monkeypatch.delenv(settings.WORKSHOP_URL_SETTING)
    blocker = Path(room.dir).parent / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(settings.RUNTIME_DIR_SETTING, str(blocker / "runtime"))
    assert workshop.report("data_types.check_top_scores", "passed") is False
    check(check_top_scores, top_scores)
    assert capsys.readouterr().out.startswith("[PASS]")


def test_a_learner_can_only_append_to_their_own_board(room):
    with redis.Redis(host=LAN, port=room.port, username="alice", password=room.learners["alice"]["password"],
                     db=0, decode_responses=True) as alice:
        alice.xadd(workshop.board_key("alice"), {"exercise": "x", "status": "passed"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.xadd(workshop.board_key("bob"), {"exercise": "x", "status": "passed"})  # no forged outcomes
        with pytest.raises(redis.exceptions.NoPermissionError):
            alice.xrange(workshop.board_key("alice"))  # nor reading anyone's


def test_the_board_widget_refreshes(room):
    board = workshop.Board(room)
    widget = workshop.board_widget(board)
    table, (refresh, follow), note = widget.children[0], widget.children[1].children, widget.children[2]
    seat = parse_join_line(room.join_line("bob"))
    assert workshop.report("caching.check_negative_caching", "failed", seat)
    refresh.click()
    assert "bob" in table.value and "FAIL" in table.value and note.value == ""


def test_the_progress_command(room):
    workshop.report("data_types.check_top_scores", "passed", parse_join_line(room.join_line("bob")))
    shown = _cli("workshop", "--room-dir", str(Path(room.dir).parent), "progress")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith("learner") and "01.1" in shown.stdout
    bob = next(line for line in shown.stdout.splitlines() if line.startswith("bob"))
    assert "PASS" in bob


def test_the_instructor_notebook_passes_strict_nbval():
    """workshop/instructor.ipynb is kept out of notebooks/ (the learners' sequence and the site), so it is run here."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "workshop/instructor.ipynb"],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]


@pytest.fixture
def alice_joined(tmp_path, monkeypatch):
    """A room of its own with alice, joined on this machine: `check()` reports to that room's board only."""
    own_room = workshop.start("alice\n", folder=tmp_path / "room", binary=find_binary())
    monkeypatch.setenv(settings.WORKSHOP_URL_SETTING, own_room.join_line("alice"))
    monkeypatch.delenv(settings.REDIS_URL_SETTING)
    yield own_room
    workshop.stop(tmp_path / "room")


def test_a_chapter_on_the_learners_own_server_is_checked_there(alice_joined):
    """Chapter 03 runs on the learner's machine (Chapter.own_server): its checks too, where patterns work."""
    from course_lib.exercises.pubsub import check_room_message
    from course_lib.exercises.solutions.pubsub import room_message

    assert check(check_room_message, room_message).status == "passed"


def test_a_checker_that_reads_server_statistics_is_not_disturbed_by_the_room(alice_joined):
    """Another client SCANs the room all along: log-out-everywhere counts SCANs server-wide, so it checks at home."""
    import threading

    from course_lib.exercises.sessions import check_log_out_everywhere
    from course_lib.exercises.solutions.sessions import log_out_everywhere

    done = threading.Event()

    def scan_the_room():
        with alice_joined.instructor_client(db=alice_joined.learners["alice"]["db"]) as instructor:
            while not done.is_set():
                instructor.scan(0, count=10)

    scanner = threading.Thread(target=scan_the_room, daemon=True)
    scanner.start()
    try:
        assert check(check_log_out_everywhere, log_out_everywhere).status == "passed"
    finally:
        done.set()
        scanner.join(timeout=5)
