"""Reference solutions to chapter 03's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

import json


def room_message(client, channel, room, user, text):
    """PUBLISH the JSON event; its reply is the number of receivers (0: nobody listened, it is gone)."""
    return client.publish(channel, json.dumps({"room": room, "user": user, "text": text}))


def order_pattern(prefix):
    """The prefix with its glob characters escaped (a backslash makes the next character literal),
    `orders.` literally, then `*` for any event name."""
    literal = "".join("\\" + char if char in "*?[]\\" else char for char in prefix)
    return f"{literal}orders.*"
