"""Transactions: the guide's WATCH-based deduction as a baseline, the course's bounded-retry
`deduct` and `transfer` (WATCH / MULTI / EXEC on a connection of their own), and the Lua alternative.

Neither MULTI/EXEC nor a Lua script rolls back: a command that fails at run time (INCRBY on a key
holding "n/a") fails alone, and the writes before it stay done. So every operation here checks,
before its first write, that each key it writes holds an integer (`NotABalance` otherwise), and
the WATCH versions watch those keys so that the check still holds at EXEC.

Optimistic locking in three steps: WATCH the keys a decision reads, read them, then send the writes
inside MULTI ... EXEC. If any watched key changed between WATCH and EXEC, the server discards the
whole transaction (EXEC answers nil, redis-py raises `WatchError`) and the caller reads again and
retries. WATCH is state of one *connection*: whoever shares that connection shares (and can clear)
the watch, which is why every transaction here runs on a redis-py pipeline, which holds one pooled
connection of its own from WATCH to EXEC.

Keys written (the braces are a cluster hash tag: one account's keys share a slot, so one
transaction or one script may use them together):

- `course:transactions:{account:<id>}:balance`: string, the balance (an integer);
- `course:transactions:{account:<id>}:spent`: string, the total deducted so far (an integer).

A transfer moves money between two balance keys; on a cluster both must share a hash tag (e.g.
`{bank:<id>}`), see `transfer`.

Scripts and functions: `transfer_lua` sends a script (EVALSHA, loaded on demand into the server's
script cache, which a restart empties); `load_library` installs `course_lib/lua/transactions_library.lua`
as a Redis Function library (FUNCTION LOAD, kept with the data), whose read-only `course_total`
`total` calls with FCALL_RO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from redis.backoff import NoBackoff
from redis.exceptions import ResponseError, WatchError
from redis.retry import Retry

from course_lib import lua
from course_lib.keys import hash_tag, key

CHAPTER = "transactions"
DEFAULT_RETRIES = 10
BALANCE = re.compile(r"-?[0-9]{1,15}")  # what INCRBY accepts, within what Lua's doubles hold exactly


class InsufficientFunds(Exception):
    """The balance is lower than the amount: nothing was written."""


class NotABalance(Exception):
    """A key to be written holds something other than an integer balance: nothing was written."""


class TooMuchContention(Exception):
    """Every attempt of a transaction was aborted by a concurrent write (WatchError); nothing was written."""


@dataclass(frozen=True)
class Result:
    """What a deduction or transfer did.

    Attributes:
        ok: True if the money moved; False if the balance was too low (then nothing was written).
        balance: the (source) balance after the operation, as read or written by it.
        retries: how many attempts a concurrent write aborted before this one (WatchErrors).
    """

    ok: bool
    balance: int
    retries: int


def account_key(account: object, field: str) -> str:
    """`account_key(42, "balance")` -> `course:transactions:{account:42}:balance`."""
    return key(CHAPTER, hash_tag("account", account), field)


def open_account(client, account: object, balance: int) -> None:
    """Set an account's balance to `balance` and its spent total to 0 (MSET: atomic, one slot)."""
    client.mset({account_key(account, "balance"): balance, account_key(account, "spent"): 0})


def guide_deduct_balance(client, account: object, amount: int, between: Callable[[], object] | None = None) -> list:
    """The guide's `deductBalance`, ported faithfully: WATCH, GET, check, MULTI DECRBY INCRBY EXEC.

    Faithful means its WATCH is sent on the shared client, as the guide's `redis.watch(key)` is: on a
    pooled redis-py client it lands on whichever connection is free and goes back to the pool, and
    the MULTI ... EXEC runs on whatever connection the pool hands out next. Another caller using
    that connection in between can commit its own transaction, and EXEC clears *every* watch of the
    connection, ours included: our EXEC then runs unprotected and the balance goes below zero. (redis-py
    refuses the literal `client.watch(key)`: on a plain client it only warns and sends nothing.)
    And a WatchError is raised to the caller with no retry: the loop is "left to the reader".

    Args:
        between: called after the balance check, before MULTI: a demo or test runs another caller
            there, to interleave the two deterministically.

    Raises:
        InsufficientFunds: the balance read is lower than `amount`.
        WatchError: the transaction was aborted (a watched key changed); the guide throws too.
    """
    balance_key, spent_key = account_key(account, "balance"), account_key(account, "spent")
    client.execute_command("WATCH", balance_key)
    balance = int(client.get(balance_key) or 0)
    if balance < amount:
        raise InsufficientFunds(f"balance {balance} is lower than {amount}")
    if between is not None:
        between()
    with client.pipeline(transaction=True) as transaction:
        transaction.decrby(balance_key, amount)
        transaction.incrby(spent_key, amount)
        return transaction.execute()


def unwatched_deduct(client, account: object, amount: int) -> bool:
    """The guide's read-check-write without a working WATCH: GET, check, then MULTI DECRBY INCRBY EXEC.

    What the guide's code amounts to when its WATCH protects nothing (a shared connection, or
    redis-py's no-op `client.watch`). The writes are atomic together, but the check is not atomic
    with them: callers that read the same balance all pass the check, and the balance goes negative.
    A baseline for the race; never use it.

    Returns:
        True if it deducted, False if the balance it read was too low.
    """
    balance_key, spent_key = account_key(account, "balance"), account_key(account, "spent")
    if int(client.get(balance_key) or 0) < amount:
        return False
    with client.pipeline(transaction=True) as transaction:
        transaction.decrby(balance_key, amount)
        transaction.incrby(spent_key, amount)
        transaction.execute()
    return True


def optimistic(client, watched: list[str], attempt: Callable, retries: int) -> Result:
    """Run `attempt(pipe)` after WATCH of `watched` on a fresh pipeline, retrying WatchError at most `retries` times.

    `attempt` reads with the pipeline (commands run at once while watching), calls `pipe.multi()`,
    queues its writes and calls `pipe.execute()` (EXEC), returning (ok, balance). Each attempt has its
    own pipeline, so its own pooled connection from WATCH to EXEC: no other caller can clear the watch.
    Retries use redis-py's own `Retry` with `WatchError` as the retryable error and no backoff (the
    next attempt reads fresh values at once); `count` tallies the aborted attempts. An attempt that
    returns without EXEC (a refusal) leaves through the pipeline's reset, which sends UNWATCH: the
    pooled connection goes back without a watch that would abort its next user's transaction.

    Raises:
        TooMuchContention: all 1 + `retries` attempts were aborted; nothing was written.
    """
    aborted = 0

    def count(_error: Exception) -> None:
        nonlocal aborted
        aborted += 1

    def once() -> tuple[bool, int]:
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(*watched)  # from here the pipeline holds its own connection until reset
            return attempt(pipe)

    retry = Retry(NoBackoff(), retries, supported_errors=(WatchError,))
    try:
        ok, balance = retry.call_with_retry(once, count)
    except WatchError:
        raise TooMuchContention(f"{aborted} attempts were all aborted by concurrent writes to {watched}; "
                                f"nothing was written (retries={retries})") from None
    return Result(ok, balance, aborted)


def deduct(client, account: object, amount: int, retries: int = DEFAULT_RETRIES,
           between: Callable[[], object] | None = None) -> Result:
    """Deduct `amount` from an account's balance and add it to its spent total, if the balance allows.

    Commands: WATCH balance spent, GET balance, GET spent, then MULTI DECRBY balance, INCRBY spent EXEC,
    on a pipeline (its own connection from WATCH to EXEC). Atomic: EXEC applies both writes only if
    neither key changed since it was read; otherwise the whole attempt is read again, at most
    `retries` more times. Both keys are checked to hold integers before MULTI, because EXEC does not
    roll back: an INCRBY failing on a corrupt spent total would leave the DECRBY done. Works on a
    cluster: both keys carry the hash tag `{account:<id>}`. Under heavy contention on one key most
    attempts are wasted; `deduct_lua` does the same work without retries.

    Args:
        between: called in every attempt after the balance check, before MULTI: a demo or test runs
            another caller there, to interleave the two deterministically.

    Returns:
        Result: ok False (nothing written) if the balance was lower than `amount`.

    Raises:
        ValueError: amount is not a positive integer.
        NotABalance: the balance or the spent total holds something else than an integer; nothing was written.
        TooMuchContention: all 1 + `retries` attempts were aborted; nothing was written.
    """
    _check_amount(amount)
    balance_key, spent_key = account_key(account, "balance"), account_key(account, "spent")

    def attempt(pipe) -> tuple[bool, int]:
        balance, _spent = read_balances(pipe, balance_key, spent_key)  # after WATCH, commands run at once
        if balance < amount:
            return False, balance
        if between is not None:
            between()
        pipe.multi()
        pipe.decrby(balance_key, amount)
        pipe.incrby(spent_key, amount)
        after, _ = pipe.execute()  # raises WatchError if a watched key changed since WATCH
        return True, after

    return optimistic(client, [balance_key, spent_key], attempt, retries)


def transfer(client, source: str, target: str, amount: int, retries: int = DEFAULT_RETRIES) -> Result:
    """Move `amount` from the balance key `source` to the balance key `target`, if `source` has enough.

    Commands: WATCH source target, GET source, GET target, then MULTI DECRBY source, INCRBY target EXEC,
    on a pipeline, retried on WatchError at most `retries` times. Atomic: both writes run together,
    and only if neither key changed since it was read, so the total over all accounts is conserved
    and no balance goes below zero. EXEC does not roll back, so "both or neither" holds only because
    both keys are checked to hold integers first (a target holding "n/a" would make the INCRBY fail
    after the DECRBY ran: the money would vanish); the target is watched so that this check still
    holds at EXEC (a deposit to it in between costs a retry). Cluster caveat: both keys must hash to
    one slot (a shared hash tag such as `{bank:<id>}`), or the transaction is refused.

    Returns:
        Result: ok False (nothing written) if `source` held less than `amount`; balance is `source`'s.

    Raises:
        ValueError: amount is not a positive integer, or source and target are the same key.
        NotABalance: source or target holds something else than an integer; nothing was written.
        TooMuchContention: all 1 + `retries` attempts were aborted; nothing was written.
    """
    _check_amount(amount)
    if source == target:
        raise ValueError(f"source and target are the same key {source!r}")

    def attempt(pipe) -> tuple[bool, int]:
        balance, _target = read_balances(pipe, source, target)
        if balance < amount:
            return False, balance
        pipe.multi()
        pipe.decrby(source, amount)
        pipe.incrby(target, amount)
        after, _ = pipe.execute()
        return True, after

    return optimistic(client, [source, target], attempt, retries)


def read_balances(pipe, *names: str) -> list[int]:
    """The integers at `names` (missing counts as 0), one GET each; NotABalance if one holds anything else.

    Called on a watching pipeline before MULTI: a transaction's keys are checked before its first
    write, since EXEC will not undo that write if a later command fails. GET, not MGET: MGET answers
    nil for a key of another type (a list), which would pass for a missing balance, where GET
    answers WRONGTYPE; and a cluster pipeline refuses MGET while watching.
    """
    balances = []
    for name in names:
        try:
            value = pipe.get(name)
        except ResponseError as error:
            raise NotABalance(f"{name} is not a string ({error}); nothing was written") from None
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if text is not None and not BALANCE.fullmatch(text):
            raise NotABalance(f"{name} holds {text!r:.40}, not an integer balance; nothing was written")
        balances.append(int(text or 0))
    return balances


def transfer_lua(client, source: str, target: str, amount: int) -> Result:
    """`transfer` as one Lua script (`course_lib/lua/transactions_transfer.lua`): check both keys, then write.

    Commands: EVALSHA (SCRIPT LOAD on first use). Atomic without WATCH: the server runs no other
    command while a script runs, so nothing can change the balances between its reads and its
    writes, and there is never a retry. A script does not roll back either: it checks that both keys
    hold integers before its first write. Cluster caveat: both keys must share a slot (a hash tag).
    Production caveat: a script blocks the server while it runs; keep scripts this short.

    Returns:
        Result with retries always 0; ok False (nothing written) if `source` held less than `amount`.

    Raises:
        ValueError: amount is not a positive integer, or source and target are the same key.
        NotABalance: source or target holds something else than an integer; nothing was written.
    """
    _check_amount(amount)
    if source == target:
        raise ValueError(f"source and target are the same key {source!r}")
    try:
        moved, balance = lua.register(client, "transactions_transfer")(keys=[source, target], args=[amount])
    except ResponseError as error:
        if str(error).startswith(("NOTABALANCE", "WRONGTYPE")):  # the script refused, or its GET did: nothing written
            raise NotABalance(str(error).removeprefix("NOTABALANCE ")) from None
        raise
    return Result(bool(moved), int(balance), 0)


def deduct_lua(client, account: object, amount: int) -> Result:
    """`deduct` as one Lua script: a deduction is a `transfer_lua` from the balance to the spent total.

    Commands: EVALSHA of `transactions_transfer.lua`. Atomic without WATCH or retries. Cluster-safe:
    both keys carry `{account:<id>}`.

    Raises:
        ValueError: amount is not a positive integer.
        NotABalance: the balance or the spent total holds something else than an integer; nothing was written.
    """
    return transfer_lua(client, account_key(account, "balance"), account_key(account, "spent"), amount)


LIBRARY = "course_transactions"  # the name in transactions_library.lua's `#!lua name=` line


def load_library(client) -> str:
    """Install (or replace) the course's function library `transactions_library.lua`; returns its name.

    Command: FUNCTION LOAD REPLACE. Unlike a script, a library is part of the server's data: it is
    saved in RDB and AOF files, copied to replicas, and still there after a restart (if the data
    is). Load it when deploying, as you would migrate a schema, not lazily on a client's first call.
    Cluster caveat: redis-py sends FUNCTION LOAD to every primary; each replica gets it from its primary.
    """
    return client.function_load(lua.source("transactions_library"), replace=True)


def total(client, *balances: str) -> int:
    """The sum of the integer balances at `balances` (missing counts as 0), read by the function `course_total`.

    Command: FCALL_RO course_total. Atomic: the function reads every key with no other command in
    between. FCALL_RO accepts only functions flagged `no-writes`, and only such calls are allowed on a
    replica (with READONLY, in a cluster). Cluster caveat: the keys must share a slot.

    Raises:
        NotABalance: a key holds something other than an integer.
        redis.ResponseError: the library is not loaded (`load_library`): "Function not found".
    """
    try:
        return int(client.fcall_ro("course_total", len(balances), *balances))
    except ResponseError as error:
        if str(error).startswith("NOTABALANCE"):
            raise NotABalance(str(error).removeprefix("NOTABALANCE ")) from None
        raise


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive integer, got {amount!r}")
