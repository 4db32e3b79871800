"""Reference solutions to chapter 03's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

import json


def room_message(client, channel, room, user, text):
    """PUBLISH the JSON event; its reply is the number of receivers (0: nobody listened, it is gone)."""
    return client.publish(channel, json.dumps({"room": room, "user": user, "text": text}))


def order_pattern(prefix):
    """The prefix, `orders.` literally, then `*` for any event name."""
    return f"{prefix}orders.*"
