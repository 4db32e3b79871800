"""Reference solutions to chapter 10's exercises (the notebook's stubs, solved)."""

from __future__ import annotations


def loss_budget(budget):
    """The AOF on; fsync before every reply for a zero budget, once a second (in the background) for one second."""
    return {"appendonly": "yes", "appendfsync": "always" if budget < 1 else "everysec"}


def confirmed_incr(client, key):
    """INCR, then WAIT for one replica for at most 500 ms, both on one connection (a pipeline): WAIT waits for
    that connection's own last write."""
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.execute_command("WAIT", 1, 500)
        _value, replicas = pipe.execute()
    return replicas >= 1
