"""Checkers for chapter 03's exercises (see `course_lib.exercises` for the pattern).

No keys are written: the checkers subscribe to channels under `course:pubsub:exercise:` and
close every subscriber they open.
"""

from __future__ import annotations

import json

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary
from course_lib.pubsub import Subscriber

MARKER = "end-of-check"
EVENT = {"room": "lobby", "user": "ann", "text": 'she said "hi" \\ 👋'}  # quotes, a backslash, an emoji


def _count(value, what: str) -> int:
    if isinstance(value, bool):  # a bool is an int in Python, but "True" is not a count
        raise ExerciseFailed(f"your function returned {value!r}; it must return {what}, an int")
    return returned(value, int, what)


def check_room_message(client, solution) -> None:
    """Publish a chat message to a room

    `solution(client, channel, room, user, text)` publishes `{"room": room, "user": user, "text": text}`
    as JSON (exactly these three fields, any text) on `channel`, once, through `client`, and returns
    PUBLISH's reply: how many subscriptions received it, pattern subscriptions included (0 when
    nobody listens: the message is gone). PUBLISH's reply is the only count that is right: a count
    asked for separately (PUBSUB NUMSUB, NUMPAT) misses what a pattern matches or not, and changes
    between the two commands.
    """
    prefix = exercise_prefix(check_room_message)
    channel = prefix + "chat"
    # A pattern that matches nothing here: NUMPAT counts it, PUBLISH's reply does not.
    with Subscriber(client, channels=[channel]) as first, Subscriber(client, channels=[channel]) as second, \
            Subscriber(client, patterns=[prefix + "*"]) as watcher, Subscriber(client, patterns=[prefix + "x*"]), \
            Adversary(client) as adversary:
        got = solution(adversary.client, channel, EVENT["room"], EVENT["user"], EVENT["text"])
        adversary.require_used()
        published = [command[1] for batch in adversary.sent for command in batch
                     if command[0].upper() in ("PUBLISH", "SPUBLISH") and len(command) > 1]
        # Whatever the solution published arrives before the checker's marker: nobody waits in vain.
        client.publish(channel, MARKER)
        heard = [subscriber.receive_until(MARKER, timeout=2.0) for subscriber in (first, second, watcher)]
    elsewhere = sorted(({m.channel for m in heard[2]} | set(published)) - {channel})
    if elsewhere:
        raise ExerciseFailed(f"a message was published on {elsewhere}: publish on exactly the `channel` argument")
    if not heard[0]:
        raise ExerciseFailed(f"the subscribers of {channel!r} received nothing: publish the message on `channel`")
    if len(heard[0]) > 1:
        raise ExerciseFailed(f"each subscriber received {len(heard[0])} messages for one chat message: publish it once")
    data = heard[0][0].data
    try:
        event = json.loads(data)
    except ValueError:
        raise ExerciseFailed(f"the message {data!r:.70} is not JSON (str() of a dict or hand-built text is not): "
                             "subscribers in any language must be able to parse it") from None
    if event != EVENT:
        raise ExerciseFailed(f"expected the fields room, user and text with the values given (and nothing else), "
                             f"got {event!r:.100}")
    receivers = _count(got, "PUBLISH's reply, the number of receivers")
    if receivers != 3:
        raise ExerciseFailed(f"you returned {receivers}, but 3 subscriptions received the message (two on the channel, "
                             "one by a pattern; another pattern matched nothing): return what PUBLISH answered, not "
                             "a count of your own")
    with Adversary(client) as adversary:
        nobody = _count(solution(adversary.client, channel, "lobby", "ann", "anyone?"), "the number of receivers")
    if nobody != 0:
        raise ExerciseFailed(f"with nobody subscribed the function returned {nobody}: PUBLISH answers 0, the message is lost")


def check_order_pattern(client, solution) -> None:
    """A pattern for order events only

    `solution(prefix)` returns a PSUBSCRIBE pattern (a str) that receives the order events published
    on `<prefix>orders.<event>`, for any event name (dots included, e.g. `refund.issued`), and nothing
    else. The prefix is matched literally, even when it contains glob characters (`*`, `?`, `[`).
    """
    base = exercise_prefix(check_order_pattern)
    for prefix in (base, base + "shop?[1]*:"):  # a tenant or shop name may contain glob characters
        pattern = returned(solution(prefix), str, "the pattern as a string")
        if not pattern:
            raise ExerciseFailed("your function returned an empty string: return the pattern")
        wanted = [f"{prefix}orders.created", f"{prefix}orders.paid", f"{prefix}orders.refund.issued",
                  f"{prefix}orders.2FA-sent"]
        unwanted = [f"{prefix}users.created", f"{prefix}orders-audit.created", f"{prefix}ordersX",
                    f"{prefix}orders", f"{prefix}archive:orders.created", f"{base}x{prefix}orders.created",
                    f"{base}shopX1Y:orders.created", "course:other:orders.created"]
        with Subscriber(client, patterns=[pattern]) as subscriber:
            # PUBLISH counts the deliveries, so nothing has to be waited for on a channel that got none.
            delivered = {name for name in wanted + unwanted if client.publish(name, "{}")}
            received = {m.channel for m in subscriber.receive(len(delivered), timeout=2.0)}
        missed = sorted(set(wanted) - received)
        if missed and prefix != base:
            raise ExerciseFailed(f"with the prefix {prefix!r} the pattern {pattern!r} missed {missed}: in a pattern "
                                 "`?`, `*` and `[...]` are glob characters, so the prefix's own ones must be made "
                                 "to match themselves")
        if missed:
            raise ExerciseFailed(f"the pattern {pattern!r} missed {missed}: it must start with the prefix "
                                 "and match any event name after `orders.` (digits, capitals and dots included)")
        extra = sorted(received - set(wanted))
        if extra:
            raise ExerciseFailed(f"the pattern {pattern!r} also received {extra}: in a glob `*` matches anything, "
                                 "dots and colons included, and `?` or `[...]` match other characters too")
