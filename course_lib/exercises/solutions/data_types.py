"""Reference solutions to chapter 01's exercises (the notebook's stubs, solved)."""

from __future__ import annotations


def top_scores(client, board, n):
    """ZRANGE board 0 n-1 REV WITHSCORES: Redis picks and orders the top n in O(log N + n).

    n = 0 is answered without asking: its stop index would be -1, which ZRANGE reads as "to the end".
    """
    if n <= 0:
        return []
    return [(member, score) for member, score in client.zrange(board, 0, n - 1, desc=True, withscores=True)]


def capped_log(client, log, entry, keep):
    """LPUSH then LTRIM 0 keep-1, in one MULTI/EXEC: one round trip, applied as one step."""
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(log, entry)
        pipe.ltrim(log, 0, keep - 1)
        pipe.execute()


def add_to_cart(client, cart, item, quantity):
    """HINCRBY: the server adds atomically, so concurrent shoppers never lose an update."""
    if quantity < 1:
        raise ValueError(f"quantity must be at least 1, got {quantity}")
    return client.hincrby(cart, item, quantity)
