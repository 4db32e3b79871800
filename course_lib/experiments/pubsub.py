"""Chapter 03's experiments, each `run_*(...) -> pandas.DataFrame`, and the fan-out playground widget.

- `run_fan_out`: the guide's Socket.IO set-up, N app servers (threads) each with its own subscriber,
  some of them possibly late (restarted during the traffic);
- `run_delivery_latency`: PUBLISH until the last of N subscribers has the message, on loopback;
- `run_slow_subscriber`: a subscriber that never reads, on a scratch server with a given
  `client-output-buffer-limit pubsub`, until the server disconnects it (`closed_at_its_limit`: its verdict);
- `run_expired_event`: keyspace notifications on a scratch server: when the `expired` event comes,
  with active expiry on or off (`came_only_on_read`: its verdict);
- `run_reconnect_gap`: a subscriber whose connection is killed; redis-py reconnects by itself and
  the messages published meanwhile are counted lost (`lost_exactly_the_gap`);
- `run_health_check`: an idle subscriber with or without `health_check_interval`: did it PING?
- `run_silent_drop`: a subscriber behind a relay that forgets its connection (a NAT or firewall
  dropping an idle flow): noticed and reconnected only with `health_check_interval`;
- `run_playground` / `playground_widget`: publish on a channel, see which of three subscribers got it.

No keys are written on the course server: everything here is channels, named `course:pubsub:<...>`
(`run_expired_event` writes its one key on its own scratch server).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

import pandas as pd
import redis

from course_lib.concurrency import run_together, wait_for
from course_lib.keys import key
from course_lib.measure import latencies, summary_ms
from course_lib.pubsub import Subscriber, deliver_to_rooms, enable_keyspace_events, keyevent_channel, publish_event
from course_lib.servers import scratch_server

CHAT = key("pubsub", "chat")
END = "end-of-run"  # the fan-out's last message: every server reads until it
PLAY = key("pubsub", "play")
# Who listens to what in the playground: a pattern, an exact channel, another pattern.
PLAYGROUND = {
    "app-1": {"patterns": [f"{PLAY}:orders.*"]},
    "app-2": {"channels": [f"{PLAY}:orders.created"]},
    "app-3": {"patterns": [f"{PLAY}:*.created"]},
}
PLAYGROUND_CHANNELS = ("orders.created", "orders.paid", "users.created", "users.deleted")


def run_fan_out(client, rooms: dict[str, set[str]], events: list[dict], late: tuple[str, ...] = (),
                timeout: float = 10.0) -> pd.DataFrame:
    """Every app server in `rooms` (name -> rooms its users joined) subscribes to the chat channel;
    the `events` (dicts with a `room`) are published while each server receives in its own thread.

    The servers in `late` subscribe only after the first half of the events was published (a server
    deployed or restarted during the traffic): Pub/Sub replays nothing, so they never get that half.
    The others' subscriptions are confirmed before any thread starts. The threads (servers + 1
    publisher) start together; the publisher ends with a marker, each server reads until it
    (`Subscriber.receive_until`), and all are joined within `timeout`.

    Returns:
        One row per server: `received` (chat messages that reached it), `delivered` (those for rooms
        with local users, the `io.to(room)` filter) and the delivered `texts`, sorted.
    """
    names, half = list(rooms), len(events) // 2
    first_half_out = threading.Barrier(len(late) + 1)  # the publisher and the late servers meet twice:
    late_subscribed = threading.Barrier(len(late) + 1)  # after the first half, and once they subscribed
    with contextlib.ExitStack() as stack:
        on_time = {name: stack.enter_context(Subscriber(client, channels=[CHAT])) for name in names if name not in late}

        def work(slot: int):
            if slot == len(names):  # the publisher
                counts = [publish_event(client, CHAT, event) for event in events[:half]]
                first_half_out.wait(timeout)
                late_subscribed.wait(timeout)
                counts += [publish_event(client, CHAT, event) for event in events[half:]]
                client.publish(CHAT, END)
                return counts
            name = names[slot]
            if name in on_time:
                return on_time[name].receive_until(END, timeout)
            first_half_out.wait(timeout)
            with Subscriber(client, channels=[CHAT]) as subscriber:
                late_subscribed.wait(timeout)
                return subscriber.receive_until(END, timeout)

        *received, _counts = run_together(work, len(names) + 1, timeout=timeout + 5, what="fan-out")
    rows = []
    for (server, local_rooms), messages in zip(rooms.items(), received):
        delivered = deliver_to_rooms(messages, local_rooms)
        rows.append({"server": server, "rooms": ", ".join(sorted(local_rooms)), "received": len(messages),
                     "delivered": len(delivered), "texts": sorted(e["text"] for e in delivered)})
    return pd.DataFrame(rows).set_index("server")


def run_delivery_latency(client, subscribers: int = 3, samples: int = 300) -> pd.DataFrame:
    """Time from PUBLISH until the last of `subscribers` subscribers has read the message.

    One thread publishes and then reads each subscriber's connection in turn (each read waits at
    most 1 s): what is measured is the server's fan-out and loopback delivery, not thread scheduling.

    Returns:
        One row: subscribers, samples, median/p95/p99/max in milliseconds.
    """
    channel = key("pubsub", "latency")
    with contextlib.ExitStack() as stack:
        listeners = [stack.enter_context(Subscriber(client, channels=[channel])) for _ in range(subscribers)]

        def publish_and_receive() -> None:
            client.publish(channel, "tick")
            for listener in listeners:
                if listener.get(timeout=1.0) is None:
                    raise RuntimeError("a subscriber did not receive a message within 1 s")

        durations = latencies(publish_and_receive, samples)
    return pd.DataFrame([{"subscribers": subscribers, "samples": samples, **summary_ms(durations)}])


def _output_buffer(admin, name: str) -> int | None:
    """The output buffer bytes (CLIENT LIST `omem`) of the client called `name`; None if it is not connected."""
    return next((int(entry["omem"]) for entry in admin.client_list() if entry.get("name") == name), None)


def run_slow_subscriber(limit: str = "pubsub 64kb 32kb 60", message_bytes: int = 4096,
                        max_messages: int = 5000) -> pd.DataFrame:
    """A subscriber that never reads, on a scratch server configured with `limit`.

    Messages of `message_bytes` are published until PUBLISH reports 0 receivers (at most
    `max_messages`); after each one, CLIENT LIST tells how much the server holds in the subscriber's
    output buffer (`omem`). The kernel's socket buffers absorb the first few megabytes (nothing
    queues in the server yet); after that the buffer grows until it passes the hard limit, and the
    server closes the client. A bounded wait then confirms CLIENT LIST no longer shows it.

    Returns:
        One row: the limit, its hard limit in MB (from CONFIG GET), whether the subscriber was listed
        before, messages and MB published until the drop, the largest output buffer seen (MB),
        dropped, listed after.
    """
    channel = key("pubsub", "firehose")
    payload = "x" * message_bytes
    with scratch_server(config={"client-output-buffer-limit": limit}) as server:
        admin = server.client()
        slow = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True, client_name="slow-subscriber")
        try:
            configured = admin.config_get("client-output-buffer-limit")["client-output-buffer-limit"].split()
            hard = int(configured[configured.index("pubsub") + 1])
            with Subscriber(slow, channels=[channel]):
                listed_before = _output_buffer(admin, "slow-subscriber") is not None
                published, dropped, peak = 0, False, 0
                while published < max_messages and not dropped:
                    published += 1
                    dropped = admin.publish(channel, payload) == 0
                    peak = max(peak, _output_buffer(admin, "slow-subscriber") or 0)
                if dropped:
                    wait_for(lambda: _output_buffer(admin, "slow-subscriber") is None, 10,
                             "the slow subscriber to be closed")
                listed_after = _output_buffer(admin, "slow-subscriber") is not None
        finally:
            slow.close()
            admin.close()
    return pd.DataFrame([{"limit": limit, "hard limit MB": round(hard / 2**20, 3), "listed before": listed_before,
                          "messages published": published, "MB published": round(published * message_bytes / 2**20, 1),
                          "peak buffer MB": round(peak / 2**20, 3), "dropped": dropped, "listed after": listed_after}])


def closed_at_its_limit(row) -> bool:
    """The verdict on a `run_slow_subscriber` row: the server let the output buffer grow to at least
    half its hard limit, and then closed the subscriber (a limit never reached, or never enforced, fails)."""
    return bool(row["dropped"] and not row["listed after"] and row["peak buffer MB"] >= 0.5 * row["hard limit MB"])


def run_expired_event(active_expiry: bool = True, ttl_ms: int = 50, window: float = 1.5) -> pd.DataFrame:
    """When does the `expired` keyspace event come? A key with a `ttl_ms` TTL on a scratch server.

    The scratch server gets `notify-keyspace-events Ex`; with `active_expiry` False its background
    expiry cycle is switched off (DEBUG SET-ACTIVE-EXPIRE 0), leaving only lazy expiry. A subscriber
    to `__keyevent@0__:expired` is confirmed, the key is SET with PX, and the event is awaited for
    at most `window` seconds, with nobody touching the key. Then DBSIZE (which counts keys still in
    memory, expired or not, without touching any), a GET of the key, and again at most `window` s
    for the event. Every wait ends at the event itself; only an event that never comes costs `window`.

    Returns:
        One row: active expiry, TTL ms, `event before any read`, `ms after the TTL` (when it came
        before a read, else None), `keys in memory` after the wait, `GET` (None: expired),
        `event after the read`.
    """
    name = key("pubsub", "expiring")
    with scratch_server() as server:
        admin, listener = server.client(), server.client()
        try:
            enable_keyspace_events(admin, "Ex")
            if not active_expiry:
                admin.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
            with Subscriber(listener, channels=[keyevent_channel("expired")]) as events:
                admin.set(name, "soon gone", px=ttl_ms)
                expires_at = time.monotonic() + ttl_ms / 1000
                before = events.get(timeout=window)
                delay = round((time.monotonic() - expires_at) * 1000) if before is not None else None
                in_memory = admin.dbsize()
                value = admin.get(name)
                after = events.get(timeout=window) if before is None else None
        finally:
            admin.close()
            listener.close()
    return pd.DataFrame([{"active expiry": active_expiry, "TTL ms": ttl_ms,
                          "event before any read": before is not None and before.data == name,
                          "ms after the TTL": delay, "keys in memory": in_memory, "GET": value,
                          "event after the read": after is not None and after.data == name}])


def came_only_on_read(row) -> bool:
    """The verdict on a `run_expired_event` row: no event while the expired key sat untouched in
    memory, and the event right after a read touched it (an active expiry cycle fails it)."""
    return bool(not row["event before any read"] and row["keys in memory"] == 1 and row["GET"] is None
                and row["event after the read"])


def _named_client(client, name: str, **settings) -> redis.Redis:
    """A client of `client`'s server with its own pool, every connection named `name` (CLIENT LIST shows it)."""
    return redis.Redis(connection_pool=redis.ConnectionPool(
        **{**client.connection_pool.connection_kwargs, "client_name": name, **settings}))


def _kill_by_name(client, name: str) -> int:
    """CLIENT KILL ID for every connection named `name`: the server closes it, as a network failure would."""
    victims = [entry["id"] for entry in client.client_list() if entry.get("name") == name]
    for victim in victims:
        client.client_kill_filter(_id=victim)
    return len(victims)


def run_reconnect_gap(client, gap: int = 5, drop: bool = True, timeout: float = 5.0) -> pd.DataFrame:
    """A subscriber's connection is killed (CLIENT KILL), `gap` messages are published, and it reads again.

    2 messages are received live first. With `drop`, the server then closes the subscriber's
    connection; the `gap` messages published next find nobody (PUBLISH -> 0). The subscriber's
    next read fails, and redis-py (its client has a `Retry`) reconnects and subscribes again by
    itself: no error reaches the application, only the new confirmation (`Subscriber.resubscribed`).
    3 more messages and an end marker follow, read until the marker.

    Returns:
        One row: published, `PUBLISH receivers during the gap` (their sum), received, lost
        (published - received), resubscribed.
    """
    channel, name = key("pubsub", "reconnect"), key("pubsub", "reconnecting-subscriber")
    listener = _named_client(client, name)
    try:
        with Subscriber(listener, channels=[channel]) as subscriber:
            published = [f"before-{n}" for n in range(2)]
            for text in published:
                client.publish(channel, text)
            got = subscriber.receive(2, timeout)
            if drop:
                _kill_by_name(client, name)
            gap_texts = [f"gap-{n}" for n in range(gap)]
            receivers = sum(client.publish(channel, text) for text in gap_texts)
            published += gap_texts
            deadline = time.monotonic() + timeout
            while drop and subscriber.resubscribed == 0 and time.monotonic() < deadline:
                if (message := subscriber.get(deadline - time.monotonic())) is not None:
                    got.append(message)
            after = [f"after-{n}" for n in range(3)]
            for text in after + [END]:
                client.publish(channel, text)
            published += after
            got += subscriber.receive_until(END, timeout)
            resubscribed = subscriber.resubscribed
    finally:
        listener.close()
    return pd.DataFrame([{"published": len(published), "PUBLISH receivers during the gap": receivers,
                          "received": len(got), "lost": len(published) - len(got), "resubscribed": resubscribed}])


def lost_exactly_the_gap(row, gap: int) -> bool:
    """The verdict on a `run_reconnect_gap` row: the reconnection happened, no error surfaced, and
    exactly the `gap` messages published while the connection was down were lost (no more, no fewer)."""
    return bool(row["resubscribed"] == 1 and row["lost"] == gap and row["PUBLISH receivers during the gap"] == 0)


def run_health_check(client, interval: float, idle_for: float = 1.5) -> pd.DataFrame:
    """An idle subscriber (nothing is published) reads for at most `idle_for` seconds: does it PING?

    Its client has `health_check_interval=interval` (0: none). The subscriber reads in 50 ms
    slices, and after each one CLIENT LIST tells the last command the server received on its
    connection (`cmd`); the loop ends at the first PING. redis-py's health check is that PING,
    sent before a read once the connection has been silent for `interval` s; its reply is
    swallowed (never returned as a message).

    Returns:
        One row: interval, pinged, `last command`, `seconds until the PING` (None if none came).
    """
    channel, name = key("pubsub", "idle"), key("pubsub", "idle-subscriber")
    listener = _named_client(client, name, health_check_interval=interval)
    try:
        with Subscriber(listener, channels=[channel]) as subscriber:
            start = time.monotonic()
            last = None
            while last != "ping" and time.monotonic() - start < idle_for:
                message = subscriber.get(timeout=0.05)
                if message is not None:
                    raise RuntimeError(f"nothing is published on {channel}, yet it received {message}")
                last = next(entry["cmd"] for entry in client.client_list() if entry.get("name") == name)
            waited = round(time.monotonic() - start, 2)
    finally:
        listener.close()
    return pd.DataFrame([{"interval": interval, "pinged": last == "ping", "last command": last,
                          "seconds until the PING": waited if last == "ping" else None}])


class _ForgetfulRelay:
    """A loopback TCP relay to `port` that can forget its connections, as a NAT gateway or a firewall
    does with flows idle too long: nothing tells either end.

    After `forget()`, bytes on a forgotten connection are no longer passed on: what the server
    sends is dropped, and a client that sends anything gets a reset (RST), as such a gateway
    answers a packet of a flow it no longer knows. New connections are relayed as usual. One
    thread serves every socket; `close()` stops and joins it and closes every socket.
    """

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port = port
        self.peers: dict[socket.socket, socket.socket] = {}
        self.clients: set[socket.socket] = set()
        self.forgotten: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._serve, name="forgetful-relay", daemon=True)
        self.thread.start()

    def forget(self) -> None:
        with self.lock:
            self.forgotten |= set(self.peers)

    def _drop(self, sock: socket.socket, reset: bool = False) -> None:
        if reset:  # close with an RST instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.selector.unregister(sock)
        self.peers.pop(sock, None)
        sock.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            for ready, _ in self.selector.select(timeout=0.05):
                sock = ready.fileobj
                with self.lock:
                    if sock is self.listener:
                        client, _ = self.listener.accept()
                        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                        self.peers.update({client: upstream, upstream: client})
                        self.clients.add(client)
                        for end in (client, upstream):
                            self.selector.register(end, selectors.EVENT_READ)
                        continue
                    if sock not in self.peers:
                        continue  # dropped earlier in this round
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if sock in self.forgotten:
                        if sock in self.clients and data:
                            self._drop(sock, reset=True)  # the server's end stays open: it never hears
                        elif not data:
                            self._drop(sock)
                        continue
                    if not data:
                        peer = self.peers[sock]
                        self._drop(sock)
                        self._drop(peer)
                        continue
                    self.peers[sock].sendall(data)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sock in list(self.peers):
            self._drop(sock)
        self.selector.close()
        self.listener.close()


def run_silent_drop(client, interval: float, window: float = 1.5) -> pd.DataFrame:
    """A subscriber whose connection dies silently, with `health_check_interval=interval` (0: none).

    The subscriber connects through `_ForgetfulRelay`. One message arrives; then the relay forgets
    the connection. The server still counts the subscriber (PUBLISH -> 1) and the client still
    waits: neither end was told. The subscriber reads in 50 ms slices for at most `window` s, until
    redis-py has reconnected and subscribed again (`Subscriber.resubscribed`). With a health check,
    the PING it sends after `interval` s of silence gets a reset, and the Retry reconnects. Then one
    more message is published and awaited for at most 1 s.

    Returns:
        One row: interval, `PUBLISH receivers while dead`, noticed, `seconds to notice` (None if
        not), `received after`.
    """
    channel = key("pubsub", "behind-a-firewall")
    relay = _ForgetfulRelay(client.connection_pool.connection_kwargs["port"])
    listener = redis.Redis(connection_pool=redis.ConnectionPool(**{
        **client.connection_pool.connection_kwargs, "host": "127.0.0.1", "port": relay.port,
        "health_check_interval": interval}))
    try:
        with Subscriber(listener, channels=[channel]) as subscriber:
            client.publish(channel, "before")
            if subscriber.get(timeout=5.0) is None:
                raise RuntimeError("the first message did not arrive through the relay")
            relay.forget()
            start = time.monotonic()
            receivers = client.publish(channel, "into the void")
            while subscriber.resubscribed == 0 and time.monotonic() - start < window:
                if (message := subscriber.get(timeout=0.05)) is not None:
                    raise RuntimeError(f"a forgotten connection delivered {message}")
            noticed = subscriber.resubscribed == 1
            took = round(time.monotonic() - start, 2)
            client.publish(channel, "after")
            after = subscriber.get(timeout=1.0)
    finally:
        listener.close()
        relay.close()
    return pd.DataFrame([{"interval": interval, "PUBLISH receivers while dead": receivers, "noticed": noticed,
                          "seconds to notice": took if noticed else None,
                          "received after": after is not None and after.data == "after"}])


def run_playground(client, channel: str, message: str = "hello", timeout: float = 5.0) -> pd.DataFrame:
    """Publish `message` on `PLAY:<channel>` to the three playground subscribers (`PLAYGROUND`).

    PUBLISH says how many subscriptions received the message, so the subscribers are read until
    that many have it (within `timeout`): nobody waits for a message that was never sent to them.
    All three are closed afterwards.

    Returns:
        One row per subscriber: what it listens to, and `got` (the pattern or channel that
        delivered the message, or "-"); the PUBLISH count is in the frame's `attrs["receivers"]`.
    """
    with contextlib.ExitStack() as stack:
        subscribers = {name: stack.enter_context(Subscriber(client, **spec)) for name, spec in PLAYGROUND.items()}
        receivers = client.publish(f"{PLAY}:{channel}", message)
        got = {}
        deadline = time.monotonic() + timeout
        while len(got) < receivers and time.monotonic() < deadline:
            for name, subscriber in subscribers.items():
                if name not in got and (delivered := subscriber.get(timeout=0.01)) is not None:
                    got[name] = (delivered.pattern or delivered.channel).removeprefix(PLAY + ":")
    rows = [{"subscriber": name, "listens to": (spec.get("patterns") or spec["channels"])[0].removeprefix(PLAY + ":"),
             "got": got.get(name, "-")} for name, spec in PLAYGROUND.items()]
    frame = pd.DataFrame(rows).set_index("subscriber")
    frame.attrs["receivers"] = receivers
    return frame


def playground_widget(client):
    """Pick a channel (or type one), press Publish: the PUBLISH count and which subscriber got it."""
    import ipywidgets as widgets
    from IPython.display import display

    channel = widgets.Combobox(value="orders.created", options=PLAYGROUND_CHANNELS, description="channel")
    publish = widgets.Button(description="Publish", button_style="primary")
    status = widgets.Label(value=f"Subscribers listen under {PLAY}:  Pick a channel and press Publish.")
    output = widgets.Output()

    def on_publish(_) -> None:
        name = channel.value.strip()
        if not name or any(ch.isspace() for ch in name):
            status.value = "Type a channel name without spaces, e.g. orders.paid"
            return
        frame = run_playground(client, name)
        status.value = f"PUBLISH {PLAY}:{name} -> {frame.attrs['receivers']} receivers"
        output.clear_output(wait=True)
        with output:
            display(frame)

    publish.on_click(on_publish)
    return widgets.VBox([widgets.HBox([channel, publish]), status, output])
