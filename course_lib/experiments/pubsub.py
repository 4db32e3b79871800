"""Chapter 03's experiments, each `run_*(...) -> pandas.DataFrame`, and the fan-out playground widget.

- `run_fan_out`: the guide's Socket.IO set-up, N app servers (threads) each with its own subscriber;
- `run_delivery_latency`: PUBLISH until the last of N subscribers has the message, on loopback;
- `run_slow_subscriber`: a subscriber that never reads, on a scratch server with a small
  `client-output-buffer-limit pubsub`, until the server disconnects it;
- `run_playground` / `playground_widget`: publish on a channel, see which of three subscribers got it.

No keys are written: everything here is channels, named `course:pubsub:<...>`.
"""

from __future__ import annotations

import contextlib
import time

import pandas as pd
import redis

from course_lib.concurrency import run_together
from course_lib.keys import key
from course_lib.measure import latencies, summary_ms
from course_lib.pubsub import Subscriber, deliver_to_rooms, publish_event
from course_lib.servers import scratch_server, wait_for

CHAT = key("pubsub", "chat")
PLAY = key("pubsub", "play")
# Who listens to what in the playground: a pattern, an exact channel, another pattern.
PLAYGROUND = {
    "app-1": {"patterns": [f"{PLAY}:orders.*"]},
    "app-2": {"channels": [f"{PLAY}:orders.created"]},
    "app-3": {"patterns": [f"{PLAY}:*.created"]},
}
PLAYGROUND_CHANNELS = ("orders.created", "orders.paid", "users.created", "users.deleted")


def run_fan_out(client, rooms: dict[str, set[str]], events: list[dict], timeout: float = 10.0) -> pd.DataFrame:
    """Every app server in `rooms` (name -> rooms its users joined) subscribes to the chat channel;
    the `events` (dicts with a `room`) are published while each server receives in its own thread.

    Subscriptions are confirmed before any thread starts, so no event can be published too early;
    the threads (servers + 1 publisher) start together and are all joined within `timeout`.

    Returns:
        One row per server: `received` (every event reached every server), `delivered` (events for
        rooms with local users, the `io.to(room)` filter) and the delivered `texts`, sorted.
    """
    with contextlib.ExitStack() as stack:
        subscribers = [stack.enter_context(Subscriber(client, channels=[CHAT])) for _ in rooms]

        def work(slot: int):
            if slot == len(subscribers):
                return [publish_event(client, CHAT, event) for event in events]
            return subscribers[slot].receive(len(events), timeout=timeout)

        *received, _counts = run_together(work, len(subscribers) + 1, timeout=timeout + 5, what="fan-out")
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


def _listed(admin, name: str) -> bool:
    return any(entry.get("name") == name for entry in admin.client_list())


def run_slow_subscriber(limit: str = "pubsub 64kb 32kb 60", message_bytes: int = 4096,
                        max_messages: int = 5000) -> pd.DataFrame:
    """A subscriber that never reads, on a scratch server configured with `limit`.

    Messages of `message_bytes` are published until PUBLISH reports 0 receivers (at most
    `max_messages`). The kernel's socket buffers absorb the first few megabytes; after that the
    server queues them in the client's output buffer, and past the hard limit it closes the client.
    A bounded wait then confirms CLIENT LIST no longer shows it.

    Returns:
        One row: listed before, messages published until the drop, megabytes, listed after.
    """
    channel = key("pubsub", "firehose")
    payload = "x" * message_bytes
    with scratch_server(config={"client-output-buffer-limit": limit}) as server:
        admin = server.client()
        slow = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True, client_name="slow-subscriber")
        try:
            with Subscriber(slow, channels=[channel]):
                listed_before = _listed(admin, "slow-subscriber")
                published, dropped = 0, False
                while published < max_messages and not dropped:
                    published += 1
                    dropped = admin.publish(channel, payload) == 0
                if dropped:
                    wait_for(lambda: not _listed(admin, "slow-subscriber"), 10, "the slow subscriber to be closed")
                listed_after = _listed(admin, "slow-subscriber")
        finally:
            slow.close()
            admin.close()
    return pd.DataFrame([{"limit": limit, "listed before": listed_before, "messages published": published,
                          "MB published": round(published * message_bytes / 1e6, 1), "dropped": dropped,
                          "listed after": listed_after}])


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
