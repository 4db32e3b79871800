"""Reference solutions to chapter 08's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

from redis.exceptions import WatchError


def deduct(client, balance, spent, amount):
    """WATCH both keys on a pipeline (its own connection), check them, write both in MULTI/EXEC; retry on WatchError."""
    if amount <= 0:
        return False  # a negative "deduction" would add money
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(balance, spent)
                # int() refuses a non-number before anything is written: EXEC would not undo the DECRBY
                have, _ = int(pipe.get(balance) or 0), int(pipe.get(spent) or 0)
                if have < amount:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.decrby(balance, amount)
                pipe.incrby(spent, amount)
                pipe.execute()
                return True
            except WatchError:
                continue  # someone changed a key since we read it: read again


def transfer(client, source, target, amount):
    """`client.transaction` runs the function under WATCH of both keys and retries it on WatchError itself."""
    if amount <= 0:
        return False  # a negative amount would move money from target to source

    def move(pipe):
        # int() refuses a target holding "n/a" before anything is written: EXEC would not undo the DECRBY
        have, _ = int(pipe.get(source) or 0), int(pipe.get(target) or 0)
        if have < amount:
            return False
        pipe.multi()
        pipe.decrby(source, amount)
        pipe.incrby(target, amount)
        return True

    return client.transaction(move, source, target, value_from_callable=True)
