"""A command playground: type a Redis command as you would in redis-cli, see the reply.

`run_command` is the tested logic; `widget` is the notebook front end on top of it.
Replies are shown in redis-cli's style, from the raw RESP3 reply (redis-py's friendly
conversions, such as SET -> True, are bypassed so you see what the server sent).
"""

from __future__ import annotations

import html
import shlex

import redis

# Commands that would hang this connection, stop the server, or wipe other chapters' keys.
REFUSED = {
    "SUBSCRIBE": "it turns the connection into a subscriber that never returns here; see chapter 03",
    "PSUBSCRIBE": "it turns the connection into a subscriber that never returns here; see chapter 03",
    "SSUBSCRIBE": "it turns the connection into a subscriber that never returns here; see chapter 03",
    "MONITOR": "it streams every command forever; run `redis-cli monitor` in a terminal instead",
    "SYNC": "it starts a replication stream",
    "PSYNC": "it starts a replication stream",
    "SHUTDOWN": "it stops the course's server; use `python -m course_lib down`",
    "FLUSHALL": "it deletes every chapter's keys; delete your own with delete_prefix(r, 'course:<chapter>:')",
    "FLUSHDB": "it deletes every chapter's keys; delete your own with delete_prefix(r, 'course:<chapter>:')",
    "DEBUG": "DEBUG can stall or crash the server",
}


def format_reply(reply, indent: int = 0) -> str:
    """Render a decoded RESP3 reply the way redis-cli does (sets sorted, so the output is stable)."""
    pad = " " * indent
    if reply is None:
        return "(nil)"
    if isinstance(reply, bool):
        return "(true)" if reply else "(false)"
    if isinstance(reply, int):
        return f"(integer) {reply}"
    if isinstance(reply, float):
        return f"(double) {reply:g}"
    if isinstance(reply, bytes):
        reply = reply.decode(errors="replace")
    if isinstance(reply, str):
        return f'"{reply}"'
    if isinstance(reply, redis.ResponseError):
        return f"(error) {reply}"
    if isinstance(reply, dict):
        if not reply:
            return "(empty hash)"
        items = [(format_reply(k), v) for k, v in reply.items()]
        return _numbered([f"{k} => {format_reply(v, indent + 3)}" for k, v in items], "#", pad)
    if isinstance(reply, (set, frozenset)):
        if not reply:
            return "(empty set)"
        return _numbered([format_reply(v, indent + 3) for v in sorted(reply, key=str)], "~", pad)
    if isinstance(reply, (list, tuple)):
        if not reply:
            return "(empty array)"
        return _numbered([format_reply(v, indent + 3) for v in reply], ")", pad)
    return repr(reply)


def _numbered(lines: list[str], mark: str, pad: str) -> str:
    width = len(str(len(lines)))
    return "\n".join(f"{'' if i == 1 else pad}{str(i).rjust(width)}{mark} {line}" for i, line in enumerate(lines, 1))


def run_command(client: redis.Redis, line: str) -> str:
    """Run one command line (quotes allowed, as in a shell) and return the formatted reply.

    Never raises for a bad command: errors come back as `(error) ...` text, like redis-cli.
    """
    try:
        words = shlex.split(line)
    except ValueError as exc:
        return f"(error) cannot parse the line: {exc}"
    if not words:
        return ""
    name = words[0].upper()
    if name in REFUSED:
        return f"(refused) {name} is disabled in the playground: {REFUSED[name]}"
    raw = redis.Redis(connection_pool=client.connection_pool)
    raw.response_callbacks.clear()  # show the server's reply, not redis-py's conversion of it
    try:
        return format_reply(raw.execute_command(*words))
    except redis.ResponseError as exc:
        return f"(error) {exc}"
    except redis.TimeoutError:
        return "(error) no reply within the socket timeout: a blocking command? give it a timeout, e.g. BLPOP key 1"


def widget(client: redis.Redis):
    """A text box and a Run button; each command and its reply is appended to a transcript."""
    import ipywidgets as w

    command = w.Text(placeholder="e.g. SET course:getting_started:name Ada", layout=w.Layout(width="60%"))
    run = w.Button(description="Run", button_style="primary")
    transcript = w.HTML(value="")
    history: list[str] = []

    def on_run(_=None):
        if not command.value.strip():
            return
        reply = run_command(client, command.value)
        history.append(f"&gt; {html.escape(command.value)}\n{html.escape(reply)}")
        transcript.value = "<pre>" + "\n".join(history[-20:]) + "</pre>"
        command.value = ""

    run.on_click(on_run)
    return w.VBox([w.HBox([command, run]), transcript])
