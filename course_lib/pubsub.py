"""Chapter 03 · Pub/Sub: JSON events, subscribers that always wait a bounded time and always close,
the guide's room fan-out done in Python, and a publish that also keeps a log for whoever was away.

Pub/Sub channels are not keys: they live outside the keyspace (no TTL, invisible to SCAN, untouched
by `delete_prefix`), exist only while somebody subscribes, and store nothing. The course still names
them like keys, `course:pubsub:<...>`, so `PUBSUB CHANNELS course:pubsub:*` lists exactly its own.

Keys written: only `publish_logged` writes one, the stream the caller names (XADD, capped with
`MAXLEN ~`), each entry holding one field `event` (the JSON text).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass

CONFIRMATIONS = {"subscribe", "psubscribe", "ssubscribe"}
DELIVERIES = {"message", "pmessage", "smessage"}


def publish_event(client, channel: str, event: dict) -> int:
    """PUBLISH `event` as JSON on `channel`; returns how many subscriptions received it.

    One command, atomic: the message is copied to every subscriber connected at that instant and
    then forgotten. 0 means nobody listened, and the message is gone for good: Pub/Sub keeps no
    history and never retries. A client subscribed to the channel and to a matching pattern counts
    (and receives it) twice.

    Cluster caveat: a classic PUBLISH is forwarded to every node over the cluster bus, so any node's
    subscribers get it, but the count is only the receivers on the node that ran the command. Use
    `SPUBLISH` (sharded Pub/Sub) to keep a channel's traffic on the one shard that owns its slot.
    """
    return client.publish(channel, json.dumps(event, sort_keys=True))


@dataclass(frozen=True)
class Message:
    """One delivered message: its channel, the pattern that matched (None for a plain subscription)
    and its text."""

    channel: str
    pattern: str | None
    data: str

    def event(self) -> dict:
        """The payload parsed as JSON."""
        return json.loads(self.data)


class Subscriber:
    """A dedicated subscriber connection, used as a context manager; every wait on it is bounded.

    Commands: SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE on entry (each confirmed by the server before
    `__enter__` returns, so a PUBLISH made afterwards is certain to reach it), UNSUBSCRIBE and a
    closed connection on exit.

        with Subscriber(client, channels=["course:pubsub:chat"]) as chat:
            publish_event(client, "course:pubsub:chat", {"text": "hi"})
            chat.receive(1, timeout=1.0)  # -> [Message(channel=..., pattern=None, data='{"text": "hi"}')]

    A subscribed connection is a different kind of connection: over RESP2 it may only (un)subscribe
    and PING, which is why redis-py gives it a connection of its own, taken from `client`'s pool.
    Messages that arrive while nobody reads wait in the server's output buffer for this client; a
    reader that falls too far behind is disconnected (`client-output-buffer-limit pubsub`).

    Cluster: with `RedisCluster`, pass `sharded` channels (SSUBSCRIBE goes to the node that owns
    each channel's slot); classic `channels` and `patterns` are for a standalone server.
    """

    def __init__(self, client, channels=(), patterns=(), sharded=(), confirm_timeout: float = 5.0):
        if sharded and (channels or patterns):
            raise ValueError("a Subscriber listens to sharded channels or to classic channels/patterns, not both")
        if not (channels or patterns or sharded):
            raise ValueError("subscribe to at least one channel or pattern")
        self.client = client
        self.channels, self.patterns, self.sharded = list(channels), list(patterns), list(sharded)
        self.confirm_timeout = confirm_timeout
        self.pubsub = None
        self._early: deque[Message] = deque()  # messages that arrived before every confirmation did

    def __enter__(self) -> "Subscriber":
        self.pubsub = self.client.pubsub()
        try:
            if self.channels:
                self.pubsub.subscribe(*self.channels)
            if self.patterns:
                self.pubsub.psubscribe(*self.patterns)
            if self.sharded:
                self.pubsub.ssubscribe(*self.sharded)
            self._await_confirmations(len(self.channels) + len(self.patterns) + len(self.sharded))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _next(self, timeout: float):
        read = self.pubsub.get_sharded_message if self.sharded else self.pubsub.get_message
        return read(timeout=timeout)

    def _await_confirmations(self, expected: int) -> None:
        deadline = time.monotonic() + self.confirm_timeout
        confirmed = 0
        while confirmed < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the server confirmed {confirmed} of {expected} subscriptions "
                                   f"within {self.confirm_timeout:g} s")
            raw = self._next(remaining)
            if raw is None:
                continue
            if raw["type"] in CONFIRMATIONS:
                confirmed += 1
            elif raw["type"] in DELIVERIES:
                self._early.append(Message(raw["channel"], raw.get("pattern"), raw["data"]))

    def get(self, timeout: float) -> Message | None:
        """The next message, waiting at most `timeout` seconds; None if none came."""
        if self._early:
            return self._early.popleft()
        deadline = time.monotonic() + timeout
        while True:
            raw = self._next(max(0.0, deadline - time.monotonic()))
            if raw is not None and raw["type"] in DELIVERIES:
                return Message(raw["channel"], raw.get("pattern"), raw["data"])
            if time.monotonic() >= deadline:
                return None

    def receive(self, count: int, timeout: float) -> list[Message]:
        """Up to `count` messages, waiting at most `timeout` seconds in all; fewer if they never came."""
        deadline = time.monotonic() + timeout
        received: list[Message] = []
        while len(received) < count:
            message = self.get(max(0.0, deadline - time.monotonic()))
            if message is None:
                break
            received.append(message)
        return received

    def close(self) -> None:
        """Unsubscribe and close the connection (also ends the subscriptions on the server)."""
        if self.pubsub is not None:
            self.pubsub.close()
            self.pubsub = None


def deliver_to_rooms(messages: list[Message], local_rooms: set[str]) -> list[dict]:
    """The guide's `io.to(data.room).emit(...)` step, without Socket.IO: of the chat events an app
    server received, the ones for rooms where this server has connected users.

    Every app server receives every chat message (Pub/Sub has no notion of rooms); each one drops
    what none of its own users needs. With many servers and many rooms most messages are dropped
    by most servers: a channel per room (`chat:<room>`, or a pattern) lets Redis do the filtering.
    """
    return [event for event in (m.event() for m in messages) if event.get("room") in local_rooms]


def publish_logged(client, channel: str, stream: str, event: dict, maxlen: int = 10_000) -> tuple[int, str]:
    """PUBLISH `event` for whoever listens now and XADD it to `stream` for whoever was away.

    Both commands run in one MULTI/EXEC: no event reaches live listeners without also being
    logged. A subscriber that reconnects reads what it missed with XRANGE from the last entry id it
    saw (chapter 04 adds consumer groups and acknowledgements). `MAXLEN ~ maxlen` caps the log.

    Returns:
        (receivers of the PUBLISH, id of the new stream entry).

    Standalone only: redis-py's cluster pipeline refuses PUBLISH (RedisClusterException). On a
    cluster, let consumers read the Stream itself (XREAD BLOCK, chapter 04), or send XADD and then
    SPUBLISH as two commands and accept that a crash between them skips the live notification.
    """
    payload = json.dumps(event, sort_keys=True)
    with client.pipeline(transaction=True) as pipe:
        pipe.publish(channel, payload)
        pipe.xadd(stream, {"event": payload}, maxlen=maxlen, approximate=True)
        receivers, entry_id = pipe.execute()
    return receivers, entry_id
