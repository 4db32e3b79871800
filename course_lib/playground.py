"""A command playground: type a Redis command as you would in redis-cli, see the reply.

`Playground.run` is the tested logic; `widget` is the notebook front end on top of it.
Replies are shown in redis-cli's style, from the raw RESP3 reply (redis-py's friendly
conversions, such as SET -> True, are bypassed so you see what the server sent).

A playground has its own single connection, never one of the notebook client's pool: what a
typed command changes on a connection (MULTI, WATCH, CLIENT SETNAME...) stays on the
playground's, so it cannot leak into the notebook's `r`. Its socket timeout bounds every wait.
Refused, with the reason, are commands that still cannot work here: those that turn the
connection into a stream of pushes (SUBSCRIBE, MONITOR), stop replying (CLIENT REPLY OFF),
change the protocol or database under the client (HELLO, RESET, SELECT), block longer than the
playground waits (BLPOP k 0), or stop or wipe the shared server.
"""

from __future__ import annotations

import html
import shlex

import redis

TIMEOUT = 3.0  # seconds the playground waits for any reply
MAX_BLOCK = 2.0  # seconds a blocking command may ask for, so its reply arrives within TIMEOUT

_PUBSUB = "Pub/Sub turns the connection into a stream of pushed messages that never returns here; see chapter 03"
# Commands that cannot work on a request/reply connection, change it under the client, or harm the shared server.
REFUSED = {
    **{name: _PUBSUB for name in ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
                                   "SUNSUBSCRIBE")},
    "MONITOR": "it streams every command forever; run `redis-cli monitor` in a terminal instead",
    "SYNC": "it starts a replication stream",
    "PSYNC": "it starts a replication stream",
    "HELLO": "it changes the protocol (RESP2/RESP3) under a client that parses RESP3",
    "RESET": "it switches the connection back to RESP2 under a client that parses RESP3",
    "SELECT": "the course keeps every key in the database connect() chose, and a reconnect would silently "
              "return to it; for another database, connect to it: connect(url='redis://host:port/1')",
    "SHUTDOWN": "it stops the course's server; use `python -m course_lib down`",
    "FLUSHALL": "it deletes every chapter's keys; delete your own with delete_prefix(r, 'course:<chapter>:')",
    "FLUSHDB": "it deletes every chapter's keys; delete your own with delete_prefix(r, 'course:<chapter>:')",
    "DEBUG": "DEBUG can stall or crash the server",
}
# Blocking commands: where their timeout is, and its unit (0 blocks forever).
_BLOCKING_LAST_SECONDS = {"BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "BRPOPLPUSH", "BLMOVE"}
_BLOCKING_FIRST_SECONDS = {"BLMPOP", "BZMPOP"}
_BLOCKING_LAST_MS = {"WAIT", "WAITAOF"}
_BLOCKING_OPTION_MS = {"XREAD", "XREADGROUP"}


def _block_seconds(words: list[str]) -> float | None:
    """How long a blocking command asks the server to wait, in seconds; None if it does not block
    (or its timeout is malformed: the server then says so)."""
    name, args = words[0].upper(), words[1:]
    try:
        if name in _BLOCKING_LAST_SECONDS and args:
            return float(args[-1])
        if name in _BLOCKING_FIRST_SECONDS and args:
            return float(args[0])
        if name in _BLOCKING_LAST_MS and args:
            return float(args[-1]) / 1000
        if name in _BLOCKING_OPTION_MS:
            upper = [arg.upper() for arg in args]
            options = upper[:upper.index("STREAMS")] if "STREAMS" in upper else upper  # key names follow STREAMS
            if "BLOCK" in options[:-1]:
                return float(args[options.index("BLOCK") + 1]) / 1000
    except ValueError:
        return None
    return None


def _refusal(words: list[str]) -> str | None:
    """Why the playground will not send this command, or None."""
    name = words[0].upper()
    if name in REFUSED:
        return f"{name} is disabled in the playground: {REFUSED[name]}"
    if name == "CLIENT" and len(words) > 1 and words[1].upper() == "REPLY":
        return ("CLIENT REPLY is disabled in the playground: with replies off or skipped, a client that waits "
                "for each reply waits forever")
    block = _block_seconds(words)
    if block is not None and block <= 0:
        return f"{name} with a timeout of 0 blocks forever; give it one of at most {MAX_BLOCK:g} s"
    if block is not None and block > MAX_BLOCK:
        return (f"{name} would block for up to {block:g} s; the playground waits {TIMEOUT:g} s for a reply: "
                f"give it a timeout of at most {MAX_BLOCK:g} s")
    return None


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


class Playground:
    """A private connection for typed commands, with the settings of `client` but its own socket.

    Args:
        client: the notebook's client; its server, credentials and protocol are copied, never its pool.
        timeout: seconds to wait for any reply (the socket timeout); no retry, so nothing is sent twice.
    """

    def __init__(self, client: redis.Redis, timeout: float = TIMEOUT):
        pool = client.connection_pool
        # the connection settings, without the per-pool state redis-py keeps beside them
        settings = {name: value for name, value in pool.connection_kwargs.items()
                    if not name.startswith("orig_") and name not in ("maint_notifications_pool_handler", "himport_registry")}
        settings.update(socket_timeout=timeout, retry=None)
        self.timeout = timeout
        self.client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **settings),
                                  single_connection_client=True)
        self.client.response_callbacks.clear()  # show the server's reply, not redis-py's conversion of it

    def run(self, line: str) -> str:
        """Run one command line (quotes allowed, as in a shell) and return the formatted reply.

        Never raises for a bad command: errors come back as `(error) ...` text, like redis-cli,
        and refused commands as `(refused) ...` with the reason.
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return f"(error) cannot parse the line: {exc}"
        if not words:
            return ""
        refusal = _refusal(words)
        if refusal:
            return f"(refused) {refusal}"
        try:
            return format_reply(self.client.execute_command(*words))
        except redis.ResponseError as exc:
            return f"(error) {exc}"
        except redis.TimeoutError:
            return (f"(error) no reply within {self.timeout:g} s; the playground reconnects, so a MULTI or WATCH "
                    "in progress was dropped")
        except redis.ConnectionError as exc:
            return f"(error) {exc}"

    def close(self) -> None:
        """Close the playground's connection."""
        self.client.close()
        self.client.connection_pool.disconnect()

    def __enter__(self) -> "Playground":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def widget(client: redis.Redis):
    """A text box and a Run button on a new `Playground`; each command and its reply is appended to a transcript."""
    import ipywidgets as w

    playground = Playground(client)
    command = w.Text(placeholder="e.g. SET course:getting_started:name Ada", layout=w.Layout(width="60%"))
    run = w.Button(description="Run", button_style="primary")
    transcript = w.HTML(value="")
    history: list[str] = []

    def on_run(_=None):
        if not command.value.strip():
            return
        reply = playground.run(command.value)
        history.append(f"&gt; {html.escape(command.value)}\n{html.escape(reply)}")
        transcript.value = "<pre>" + "\n".join(history[-20:]) + "</pre>"
        command.value = ""

    run.on_click(on_run)
    return w.VBox([w.HBox([command, run]), transcript])
