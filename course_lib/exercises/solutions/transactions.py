"""Reference solutions to chapter 08's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

from redis.exceptions import WatchError


def deduct(client, balance, spent, amount):
    """WATCH the balance on a pipeline (its own connection), check it, write both in MULTI/EXEC; retry on WatchError."""
    if amount <= 0:
        return False  # a negative "deduction" would add money
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(balance)
                if int(pipe.get(balance) or 0) < amount:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.decrby(balance, amount)
                pipe.incrby(spent, amount)
                pipe.execute()
                return True
            except WatchError:
                continue  # someone changed the balance since we read it: read it again


def transfer(client, source, target, amount):
    """`client.transaction` runs the function under WATCH of `source` and retries it on WatchError itself."""
    if amount <= 0:
        return False  # a negative amount would move money from target to source

    def move(pipe):
        if int(pipe.get(source) or 0) < amount:
            return False
        pipe.multi()
        pipe.decrby(source, amount)
        pipe.incrby(target, amount)
        return True

    return client.transaction(move, source, value_from_callable=True)
