"""Chapter 03 · Pub/Sub: JSON events, subscribers that always wait a bounded time and always close,
the guide's room fan-out done in Python, and a publish that also keeps a log for whoever was away
(`publish_logged`), read back by a subscriber that recovers what it missed (`LogFollower`); the
server's own events about keys (`enable_keyspace_events`, `keyevent_channel`); redis-py's listener
thread (`handler_thread`) and an asyncio subscriber (`listen_async`).

Pub/Sub channels are not keys: they live outside the keyspace (no TTL, invisible to SCAN, untouched
by `delete_prefix`), exist only while somebody subscribes, and store nothing. The course still names
them like keys, `course:pubsub:<...>`, so `PUBSUB CHANNELS course:pubsub:*` lists exactly its own.

Keys written: only `publish_logged` writes one, the stream the caller names (XADD, capped with
`MAXLEN ~`), each entry holding one field `event` (the JSON text). `LogFollower` only reads it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from course_lib import lua
from course_lib.concurrency import TimedOut

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

    When that connection drops and `client` has a `Retry` (the course's clients do), redis-py
    quietly reconnects and subscribes again: the messages published in between are lost, and the
    only trace is the server's new subscription confirmations. `resubscribed` counts them (one per
    channel or pattern each time); `LogFollower` uses it to know when to read what it missed.
    A connection that dies *silently* (a firewall or NAT forgets it; nothing tells the client) is
    another matter: a subscriber only reads, so it would wait forever. With `health_check_interval`
    set on the client (seconds), redis-py sends a PING before a read once the connection has been
    silent that long; the PING is what fails on a dead connection, and the reconnection follows.
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
        self.resubscribed = 0  # confirmations after `__enter__`: redis-py reconnected and subscribed again
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
                raise TimedOut(f"the server confirmed {confirmed} of {expected} subscriptions "
                               f"within {self.confirm_timeout:g} s")
            raw = self._next(remaining)
            if raw is None:
                continue
            if raw["type"] in CONFIRMATIONS:
                confirmed += 1
            elif raw["type"] in DELIVERIES:
                self._early.append(Message(raw["channel"], raw.get("pattern"), raw["data"]))

    def get(self, timeout: float) -> Message | None:
        """The next message, waiting at most `timeout` seconds; None if none came, or as soon as the
        server confirms a subscription again after a reconnection (see `resubscribed`)."""
        if self._early:
            return self._early.popleft()
        deadline = time.monotonic() + timeout
        while True:
            raw = self._next(max(0.0, deadline - time.monotonic()))
            if raw is not None and raw["type"] in DELIVERIES:
                return Message(raw["channel"], raw.get("pattern"), raw["data"])
            if raw is not None and raw["type"] in CONFIRMATIONS:
                self.resubscribed += 1
                return None
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

    def receive_until(self, marker: str, timeout: float) -> list[Message]:
        """The messages before the first one whose text is `marker` (not included), waiting at most `timeout` in all.

        A subscriber receives messages in the order they were published, on all its channels, so a
        marker published last is a bounded way to say "that was everything": nobody waits for a
        message that was never sent.
        """
        deadline = time.monotonic() + timeout
        received: list[Message] = []
        while (message := self.get(max(0.0, deadline - time.monotonic()))) is not None and message.data != marker:
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
    """XADD `event` to `stream` for whoever is away, then PUBLISH it with its entry id for whoever listens.

    Commands: one Lua script (`pubsub_publish_logged.lua`): XADD <stream> MAXLEN ~ <maxlen> * event
    <json>, then PUBLISH <channel> {"id": <entry id>, "event": <json>}. XADD comes first so the live
    message can carry the id: a subscriber remembers the last id it processed and, after a
    disconnection, reads the stream from there (`LogFollower`). The script is atomic: no event is
    published without being logged, and no other client runs between the two. `MAXLEN ~` caps the
    log, so a subscriber away longer than the log lasts still loses the oldest events.

    Works on a cluster too: the stream is the script's only key, and a PUBLISH run by a script is
    broadcast to every node like any other (the count is that node's receivers only).

    Returns:
        (receivers of the PUBLISH, id of the new stream entry).
    """
    script = lua.register(client, "pubsub_publish_logged")
    entry_id, receivers = script(keys=[stream], args=[channel, json.dumps(event, sort_keys=True), maxlen])
    return receivers, entry_id


def _position(entry_id: str) -> tuple[int, int]:
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


class LogFollower:
    """Events published with `publish_logged`, each delivered once and in order, across disconnections.

    Commands: SUBSCRIBE <channel> on entry (a `Subscriber`), XRANGE <stream> (<last_id> + COUNT <page>
    (page after page) to catch up, and the live messages in between.

        with LogFollower(client, channel, stream, last_id=saved) as mailer:
            for entry_id, event in mailer.receive(10, timeout=1.0):
                ...                    # then save mailer.last_id

    The protocol, and why each step is in this order:
    - subscribe **first**, read the stream **second**: reading first would lose whatever is
      published between the read and the subscription. The price is a window in which an event
      arrives both ways (it is in the stream *and* waiting on the subscription);
    - every live message carries its stream id, and ids only grow, so a message whose id is not
      after `last_id` was already processed: it is dropped and counted in `duplicates`;
    - when redis-py reconnects the dropped connection by itself (`Subscriber.resubscribed` grows),
      the events published meanwhile were lost live: the follower reads them from the stream
      before the next live message.

    `last_id` lives in this object; to survive a restart of the process, save it after processing
    and pass it back. Caveat: if the stream was trimmed past `last_id`, the events in between are
    gone (size `MAXLEN` for the longest outage). Standalone or cluster: the stream is one key.
    """

    def __init__(self, client, channel: str, stream: str, last_id: str = "0-0", page: int = 100):
        self.client, self.stream, self.page = client, stream, page
        self.last_id = last_id
        self.duplicates = 0
        self.subscriber = Subscriber(client, channels=[channel])
        self._caught_up_at: int | None = None  # `subscriber.resubscribed` when the stream was last read

    def __enter__(self) -> "LogFollower":
        self.subscriber.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.subscriber.close()

    def _behind(self) -> bool:
        return self._caught_up_at != self.subscriber.resubscribed

    def catch_up(self) -> list[tuple[str, dict]]:
        """Every event in the stream after `last_id`, oldest first (XRANGE, `page` entries per round trip)."""
        self._caught_up_at = self.subscriber.resubscribed  # a reconnection during the read means: read again
        caught: list[tuple[str, dict]] = []
        while entries := self.client.xrange(self.stream, min="(" + self.last_id, count=self.page):
            for entry_id, fields in entries:
                caught.append((entry_id, json.loads(fields["event"])))
                self.last_id = entry_id
        return caught

    def receive(self, count: int, timeout: float) -> list[tuple[str, dict]]:
        """New events as (id, event): first what the stream holds that was missed, then live ones,
        until there are `count` or `timeout` seconds have passed; duplicates are dropped."""
        deadline = time.monotonic() + timeout
        got: list[tuple[str, dict]] = []
        while len(got) < count:
            if self._behind():
                got += self.catch_up()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = self.subscriber.get(remaining)
            if message is None:  # the time is up, or the subscription was just restored: caught up above
                continue
            envelope = message.event()
            if _position(envelope["id"]) <= _position(self.last_id):
                self.duplicates += 1
                continue
            self.last_id = envelope["id"]
            got.append((envelope["id"], envelope["event"]))
        return got


def keyevent_channel(event: str, db: int = 0) -> str:
    """The channel on which the server announces every `event` (e.g. "expired", "del") in database `db`.

    Keyspace notifications come on two families of channels: `__keyevent@<db>__:<event>` carries
    the key's name for every key that had that event, `__keyspace@<db>__:<key>` carries the event's
    name for every event on that key. Subscribe to them like any channel (or a pattern over them).
    """
    return f"__keyevent@{db}__:{event}"


def enable_keyspace_events(client, flags: str) -> str:
    """Turn on the server's keyspace notifications for `flags`; returns the previous flags (to restore them).

    Commands: CONFIG GET notify-keyspace-events, CONFIG SET notify-keyspace-events <flags>. Flags
    pick the channel family (`K` keyspace, `E` keyevent) and the events (`x` expired, `g` generic
    commands such as DEL, `$` strings, `A` almost all...): "Ex" is "expired events, on the keyevent
    channels". Not atomic (two commands), and server-wide: every client of the server sees the
    change, so the course changes it on a private scratch server only.

    Caveats: the events are ordinary Pub/Sub messages, so a subscriber that is away misses them for
    good. `expired` is sent when the server *deletes* an expired key, which happens when a command
    touches it (lazy expiry) or when the background cycle samples it (active expiry, a few times a
    second, on a sample of the keys with a TTL): it can come well after the TTL, so it is no timer.
    On a cluster every node announces only its own keys: subscribe on every primary.
    """
    previous = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
    client.config_set("notify-keyspace-events", flags)
    return previous


@contextmanager
def handler_thread(client, handlers: dict[str, Callable[[dict], object]], poll: float = 0.1,
                   confirm_timeout: float = 5.0) -> Iterator:
    """redis-py's own listener thread: every message on a channel of `handlers` calls that channel's function.

    Commands: SUBSCRIBE <channels> on a connection of its own, confirmed by the server before the
    thread starts (so a PUBLISH made inside the `with` reaches it); then `PubSub.run_in_thread`
    reads in a loop, each read waiting at most `poll` seconds so that a stop request is noticed;
    on exit the thread is stopped and joined (within `confirm_timeout`), and the connection closed.

        with handler_thread(client, {channel: on_message}):
            ...   # on_message(raw message dict) runs in the thread

    Caveats: the handlers run in that one thread, one message at a time, so a slow handler delays
    every later message (and the server buffers them meanwhile); they must be thread-safe with the
    rest of the program. A handler that raises ends the thread (redis-py then prints the traceback):
    catch inside the handler.
    """
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(**handlers)
        deadline = time.monotonic() + confirm_timeout
        confirmed = 0
        while confirmed < len(handlers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimedOut(f"the server confirmed {confirmed} of {len(handlers)} subscriptions")
            raw = pubsub.get_message(timeout=remaining)
            confirmed += raw is not None and raw["type"] == "subscribe"
        thread = pubsub.run_in_thread(sleep_time=poll, daemon=True)
        try:
            yield thread
        finally:
            thread.stop()
            thread.join(confirm_timeout)
    finally:
        pubsub.close()


async def listen_async(aclient, channels: list[str], count: int, timeout: float,
                       ready: asyncio.Event | None = None) -> list[Message]:
    """An asyncio subscriber: up to `count` messages on `channels`, waiting at most `timeout` seconds in all.

    Commands: SUBSCRIBE <channels> on a connection of its own from `aclient`'s pool (a
    `redis.asyncio.Redis`), then reads; the connection is closed on the way out, whatever happens.
    `ready` is set once the server confirmed every subscription, so a publishing coroutine can
    await it instead of guessing. While a coroutine waits for a message, the event loop runs the
    others: many subscribers (and publishers) share one thread, each on its own connection.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pubsub = aclient.pubsub()
    received: list[Message] = []
    try:
        await pubsub.subscribe(*channels)
        confirmed = 0
        while len(received) < count and (remaining := deadline - loop.time()) > 0:
            raw = await pubsub.get_message(timeout=remaining)
            if raw is None:
                continue
            if raw["type"] == "subscribe":
                confirmed += 1
                if ready is not None and confirmed == len(channels):
                    ready.set()
            elif raw["type"] in DELIVERIES:
                received.append(Message(raw["channel"], raw.get("pattern"), raw["data"]))
    finally:
        await pubsub.aclose()
    return received
