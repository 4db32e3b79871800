"""Reference solutions to chapter 07's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

from itertools import islice


def bulk_load(client, items):
    """SETs in plain pipelines (no MULTI/EXEC) of 1,000: five round trips for 5,000 keys."""
    pairs = iter(items.items())
    while chunk := list(islice(pairs, 1000)):
        with client.pipeline(transaction=False) as pipe:
            for name, value in chunk:
                pipe.set(name, value)
            pipe.execute()


def read_profiles(client, names):
    """One HGETALL per name on one pipeline; an empty reply means the hash does not exist."""
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        replies = pipe.execute()
    return {name: fields for name, fields in zip(names, replies) if fields}
