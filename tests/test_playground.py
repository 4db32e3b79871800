"""The command playground of notebook 00: redis-cli style replies, its own connection, refusals, and the widget."""

import time

import pytest

from course_lib.playground import MAX_BLOCK, Playground, format_reply, widget


@pytest.fixture
def pg(r):
    with Playground(r) as playground:
        yield playground


@pytest.mark.parametrize("reply, shown", [
    (None, "(nil)"),
    (True, "(true)"),
    (7, "(integer) 7"),
    (1.5, "(double) 1.5"),
    ("OK", '"OK"'),
    ([], "(empty array)"),
    ({}, "(empty hash)"),
    (["a", ["b", 2]], '1) "a"\n2) 1) "b"\n   2) (integer) 2'),
    ({"f": "v"}, '1# "f" => "v"'),
    ({"b", "a"}, '1~ "a"\n2~ "b"'),
])
def test_format_reply_matches_redis_cli(reply, shown):
    assert format_reply(reply) == shown


def test_run_shows_raw_replies(pg):
    assert pg.run("SET course:playground:name 'Ada Lovelace'") == '"OK"'
    assert pg.run("GET course:playground:name") == '"Ada Lovelace"'
    assert pg.run("INCR course:playground:n") == "(integer) 1"
    assert pg.run("HSET course:playground:h f v") == "(integer) 1"
    assert pg.run("HGETALL course:playground:h") == '1# "f" => "v"'


def test_run_reports_errors_instead_of_raising(r, pg):
    assert pg.run("") == ""
    assert pg.run("SET 'unbalanced").startswith("(error) cannot parse the line")
    assert pg.run("NOSUCHCOMMAND x").startswith("(error) ")
    assert pg.run("INCR course:playground:name") == "(integer) 1"
    r.set("course:playground:text", "abc")
    assert pg.run("INCR course:playground:text").startswith("(error) value is not an integer")


def test_the_playground_has_its_own_connection(r, pg):
    r_ids = {r.client_id()}
    assert pg.run("CLIENT ID") not in {f"(integer) {i}" for i in r_ids}
    assert pg.client.connection_pool is not r.connection_pool


def test_multi_typed_in_the_playground_stays_there(r, pg):
    """Before: MULTI went to a connection of r's pool, and r's next commands on it were QUEUED, not run."""
    assert pg.run("MULTI") == '"OK"'
    assert pg.run("SET course:playground:k from-multi") == '"QUEUED"'
    assert r.set("course:playground:r", "mine") is True and r.get("course:playground:r") == "mine"
    assert pg.run("EXEC") == '1) "OK"'
    assert r.get("course:playground:k") == "from-multi"


def test_watch_typed_in_the_playground_does_not_abort_rs_transactions(r, pg):
    """Before: the WATCHed connection went back to r's pool, and r's next MULTI/EXEC on it was aborted."""
    assert pg.run("WATCH course:playground:w") == '"OK"'
    r.set("course:playground:w", 1)  # changes the watched key
    for _ in range(3):  # whichever of r's connections a transaction gets, none is the watching one
        with r.pipeline(transaction=True) as pipe:
            pipe.incr("course:playground:w")
            pipe.execute()
    assert pg.run("MULTI") == '"OK"' and pg.run("INCR course:playground:w") == '"QUEUED"'
    assert pg.run("EXEC") == "(nil)"  # the playground's own WATCH saw the change and aborted its own EXEC
    assert r.get("course:playground:w") == "4"


@pytest.mark.parametrize("line, reason", [
    ("flushall", "deletes every chapter's keys"),
    ("SUBSCRIBE news", "Pub/Sub"),
    ("unsubscribe", "Pub/Sub"),
    ("monitor", "streams every command"),
    ("SHUTDOWN NOSAVE", "stops the course's server"),
    ("SELECT 1", "database connect() chose"),
    ("HELLO 2", "changes the protocol"),
    ("RESET", "back to RESP2"),
    ("CLIENT REPLY OFF", "waits forever"),
    ("client reply skip", "waits forever"),
    ("BLPOP course:playground:q 0", "blocks forever"),
    ("BLMOVE course:playground:q course:playground:p LEFT RIGHT 0", "blocks forever"),
    ("BZMPOP 0 1 course:playground:z MIN", "blocks forever"),
    ("XREAD BLOCK 0 STREAMS course:playground:s $", "blocks forever"),
    ("WAIT 1 0", "blocks forever"),
    ("BLPOP course:playground:q 10", "would block for up to 10 s"),
    ("xreadgroup GROUP g c BLOCK 60000 STREAMS course:playground:s >", "would block for up to 60 s"),
])
def test_what_cannot_work_is_refused_with_the_reason_and_not_run(r, pg, line, reason):
    r.set("course:playground:canary", 1)
    started = time.monotonic()
    answer = pg.run(line)
    assert answer.startswith("(refused) ") and reason in answer, answer
    assert time.monotonic() - started < 1
    assert r.get("course:playground:canary") == "1"
    assert r.connection_pool.connection_kwargs["db"] == 0 and r.hgetall("course:playground:none") == {}
    assert pg.run("PING") == '"PONG"'  # the playground still answers, in RESP3


def test_a_bounded_block_runs(pg):
    assert pg.run(f"BLPOP course:playground:q {MAX_BLOCK / 20:g}") == "(nil)"
    assert pg.run("XREAD BLOCK 50 STREAMS course:playground:s $") == "(nil)"
    assert pg.run("XADD course:playground:block * f v").startswith('"')  # a key named like an option is fine
    assert pg.run("XREAD COUNT 1 STREAMS course:playground:block 0").startswith("1# ")


def test_whatever_still_blocks_ends_at_the_socket_timeout(r):
    """The safety net: a reply that does not come (writes paused on the server) ends as an error, not a hang."""
    with Playground(r, timeout=0.3) as pg:
        r.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        try:
            started = time.monotonic()
            assert pg.run("SET course:playground:paused 1").startswith("(error) no reply within 0.3 s")
            assert time.monotonic() - started < 1.2
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        assert pg.run("PING") == '"PONG"'  # reconnected


def test_widget_runs_a_command_against_redis(r):
    view = widget(r)
    command, run = view.children[0].children
    transcript = view.children[1]
    command.value = "SET course:playground:from-widget yes"
    run.click()
    assert r.get("course:playground:from-widget") == "yes"
    assert "&quot;OK&quot;" in transcript.value or '"OK"' in transcript.value
    assert command.value == ""
