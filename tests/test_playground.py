"""The command playground of notebook 00: redis-cli style replies, refusals, and the widget."""

import pytest

from course_lib.playground import format_reply, run_command, widget


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


def test_run_command_shows_raw_replies(r):
    assert run_command(r, "SET course:playground:name 'Ada Lovelace'") == '"OK"'
    assert run_command(r, "GET course:playground:name") == '"Ada Lovelace"'
    assert run_command(r, "INCR course:playground:n") == "(integer) 1"
    assert run_command(r, "HSET course:playground:h f v") == "(integer) 1"
    assert run_command(r, "HGETALL course:playground:h") == '1# "f" => "v"'


def test_run_command_reports_errors_instead_of_raising(r):
    assert run_command(r, "") == ""
    assert run_command(r, "SET 'unbalanced").startswith("(error) cannot parse the line")
    assert run_command(r, "NOSUCHCOMMAND x").startswith("(error) ")
    assert run_command(r, "INCR course:playground:name") == "(integer) 1"
    r.set("course:playground:text", "abc")
    assert run_command(r, "INCR course:playground:text").startswith("(error) value is not an integer")


@pytest.mark.parametrize("line", ["flushall", "SUBSCRIBE news", "monitor", "SHUTDOWN NOSAVE"])
def test_dangerous_commands_are_refused_and_not_run(r, line):
    r.set("course:playground:canary", 1)
    assert run_command(r, line).startswith("(refused) ")
    assert r.get("course:playground:canary") == "1"


def test_widget_runs_a_command_against_redis(r):
    view = widget(r)
    command, run = view.children[0].children
    transcript = view.children[1]
    command.value = "SET course:playground:from-widget yes"
    run.click()
    assert r.get("course:playground:from-widget") == "yes"
    assert "&quot;OK&quot;" in transcript.value or '"OK"' in transcript.value
    assert command.value == ""
