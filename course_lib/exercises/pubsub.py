"""Checkers for chapter 03's exercises (see `course_lib.exercises` for the pattern).

No keys are written: the checkers subscribe to channels under `course:pubsub:exercise:` and
close every subscriber they open.
"""

from __future__ import annotations

import json

from course_lib.exercises import ExerciseFailed, exercise_prefix
from course_lib.pubsub import Message, Subscriber


MARKER = "end-of-check"


def _first_before_marker(subscriber: Subscriber) -> Message | None:
    messages = []
    while (message := subscriber.get(timeout=2.0)) is not None and message.data != MARKER:
        messages.append(message)
    return messages[0] if messages else None


def check_room_message(client, solution) -> None:
    """Publish a chat message to a room

    `solution(client, channel, room, user, text)` publishes `{"room": room, "user": user, "text": text}`
    as JSON on `channel` and returns how many subscribers received it.
    """
    channel = exercise_prefix(check_room_message) + "chat"
    with Subscriber(client, channels=[channel]) as first, Subscriber(client, channels=[channel]) as second:
        returned = solution(client, channel, "lobby", "ann", "hello")
        # Messages reach a subscriber in publishing order: whatever the solution published on the
        # channel arrives before this marker, so nobody waits for a message that was never sent.
        client.publish(channel, MARKER)
        got = [_first_before_marker(first), _first_before_marker(second)]
    if any(message is None for message in got):
        raise ExerciseFailed(f"{sum(m is None for m in got)} of the 2 subscribers of {channel!r} received nothing: "
                             "PUBLISH on exactly the `channel` argument")
    try:
        event = json.loads(got[0].data)
    except ValueError:
        raise ExerciseFailed(f"the message {got[0].data!r:.60} is not JSON: "
                             "publish json.dumps(...) of a dict") from None
    if event != {"room": "lobby", "user": "ann", "text": "hello"}:
        raise ExerciseFailed(f"expected the fields room, user and text (and nothing else), got {event!r:.80}")
    if returned != 2:
        raise ExerciseFailed(f"return PUBLISH's reply, the number of receivers (2 here), got {returned!r}")
    if solution(client, channel, "lobby", "ann", "anyone?") != 0:
        raise ExerciseFailed("with nobody subscribed the function must return 0: the message was lost")


def check_order_pattern(client, solution) -> None:
    """A pattern for order events only

    `solution(prefix)` returns a PSUBSCRIBE pattern that receives the order events published on
    `<prefix>orders.<event>` (any event name) and nothing else.
    """
    prefix = exercise_prefix(check_order_pattern)
    pattern = solution(prefix)
    if not isinstance(pattern, str) or not pattern:
        raise ExerciseFailed(f"return the pattern as a non-empty string, got {pattern!r:.60}")
    wanted = [f"{prefix}orders.created", f"{prefix}orders.paid", f"{prefix}orders.refund.issued"]
    unwanted = [f"{prefix}users.created", f"{prefix}orders-audit.created", f"{prefix}ordersX",
                f"{prefix}archive:orders.created", "course:other:orders.created"]
    with Subscriber(client, patterns=[pattern]) as subscriber:
        # PUBLISH counts the deliveries, so nothing has to be waited for on a channel that got none.
        delivered = {name for name in wanted + unwanted if client.publish(name, "{}")}
        received = {m.channel for m in subscriber.receive(len(delivered), timeout=2.0)}
    missed = sorted(set(wanted) - received)
    if missed:
        raise ExerciseFailed(f"the pattern {pattern!r} missed {missed}: it must start with the prefix "
                             "and match any event name after `orders.`")
    extra = sorted(received - set(wanted))
    if extra:
        raise ExerciseFailed(f"the pattern {pattern!r} also received {extra}: in a glob `*` matches anything, "
                             "dots included; keep the `.` after `orders` in the pattern")
