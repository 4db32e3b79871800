"""Pipelines: many commands in one round trip, what they are not (a transaction), and how to size them.

A pipeline sends several commands in one network write and reads all the replies afterwards: one
round trip instead of one per command. redis-py's `client.pipeline()` wraps the batch in MULTI/EXEC
by default (a transaction); `client.pipeline(transaction=False)` is the plain pipeline. This module
holds the course's helpers around them:

- `guide_batch`: the guide's "pipeline" faithfully: it is a MULTI/EXEC transaction;
- `RoundTripCounter`: a client that counts its own round trips and the commands in each, so a
  lesson (or an exercise checker) can count them without timing anything or watching the server;
- `command_calls`: how often the server has run a command (INFO commandstats), the server's side
  of the same evidence;
- `batched`: send any number of commands in pipelines of bounded size;
- `async_client`, `get_concurrently`, `get_pipelined`: `redis.asyncio`, where many coroutines
  share one connection pool, against one pipeline on one connection;
- `run_coroutine`: run a coroutine to its end from synchronous code, even inside Jupyter.

Keys written: none of its own; `guide_batch` writes the three strings it is given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections import Counter
from typing import Coroutine, Iterable, Iterator, Sequence, TypeVar

import redis
import redis.asyncio

T = TypeVar("T")
# the settings of a sync client that mean the same to a redis.asyncio connection (not its Retry, hooks...)
_ASYNC_SETTINGS = ("host", "port", "db", "username", "password", "decode_responses", "protocol",
                   "socket_timeout", "socket_connect_timeout")


def guide_batch(client, items: dict[str, str]) -> list:
    """The guide's batch of SETs, in Python: `client.pipeline()` with redis-py's default `transaction=True`.

    Commands: MULTI, one SET per item, EXEC, all sent in one round trip. Atomic: it is a
    transaction, so no other client's command runs between the SETs, and the server runs nothing
    else while it executes them. Cluster caveat: a transaction needs every key in one slot.
    """
    with client.pipeline() as pipe:
        for name, value in items.items():
            pipe.set(name, value)
        return pipe.execute()


class _CountingMixin:
    """Counts writes to the socket (round trips) and the commands packed into each write."""

    def __init__(self, *args, counter: "RoundTripCounter", **kwargs):
        super().__init__(*args, **kwargs)
        self._counter = counter
        self._handshake = False
        self._packed: list[str] = []

    def on_connect_check_health(self, *args, **kwargs):
        # HELLO and CLIENT SETINFO on a new connection are the client's business, not the caller's
        self._handshake = True
        try:
            super().on_connect_check_health(*args, **kwargs)
        finally:
            self._handshake = False

    def send_command(self, *args, **kwargs):
        self._packed.append(str(args[0]).upper())
        return super().send_command(*args, **kwargs)

    def pack_commands(self, commands):
        self._packed.extend(str(args[0]).upper() for args in commands)
        return super().pack_commands(commands)

    def send_packed_command(self, command, check_health=True):
        if not self._handshake:
            self._counter._record(self._packed)
        self._packed = []
        return super().send_packed_command(command, check_health)


class RoundTripCounter:
    """A second client of `client`'s server that counts its round trips, client side.

    Use `.client` like any client; `.round_trips` is how many times it wrote commands to the server
    (each write is followed by reading the replies), `.batch_sizes` how many commands each write
    carried, `.commands` how often each command was sent (MULTI and EXEC included). Nothing is
    timed and the server is not watched, so the counts are exact even on a shared server.

    Args:
        client: a `redis.Redis` (standalone); its connection settings are copied.

    Caveat: counts this client only (not a cluster client), and not the handshake a new connection makes.
    """

    connection_mixin = _CountingMixin  # the exercises' adversary extends both, to act between commands
    pool_class = redis.ConnectionPool

    def __init__(self, client: redis.Redis):
        pool = client.connection_pool
        base = pool.connection_class
        counting = type(f"Counting{base.__name__}", (self.connection_mixin, base), {})
        self.client = redis.Redis(connection_pool=self.pool_class(
            connection_class=counting, counter=self, **pool.connection_kwargs))
        self.reset()

    def _record(self, packed: list[str]) -> None:
        self.batch_sizes.append(len(packed))
        self.commands.update(packed)

    def reset(self) -> None:
        """Forget what was counted so far."""
        self.batch_sizes: list[int] = []
        self.commands: Counter[str] = Counter()

    @property
    def round_trips(self) -> int:
        return len(self.batch_sizes)

    def close(self) -> None:
        self.client.close()
        self.client.connection_pool.disconnect()


def command_calls(client, command: str) -> int:
    """How many times the server has run `command` since its start (or CONFIG RESETSTAT).

    Command: INFO commandstats (the `cmdstat_<name>` line, absent until the command first runs).
    Server-wide: other clients' calls count too. Cluster caveat: on a `RedisCluster` INFO goes to
    one node by default.
    """
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))


def batched(client, commands: Iterable[Sequence], size: int = 1000,
            transaction: bool = False) -> Iterator[object]:
    """Send `commands` (tuples such as `("SET", name, value)`) in pipelines of at most `size`; yield each reply.

    Commands: whatever the tuples say, `size` per round trip (wrapped in MULTI/EXEC per chunk when
    `transaction` is true). A pipeline holds every command and every reply in memory until it has
    been executed, on the client and in the server's output buffer for this client; chunking keeps
    both bounded while still saving all but one round trip in `size`. Replies are yielded as they
    arrive, chunk by chunk.

    Errors: without `transaction`, every error reply, whether the server refused the command
    (unknown command, wrong number of arguments) or it failed while running (WRONGTYPE), is
    yielded in its place as a `ResponseError`, and the other commands ran. With `transaction` only
    run-time errors are: the rest of the chunk ran (EXEC does not roll back). A command refused while
    queueing makes the server discard the whole chunk at EXEC (EXECABORT: none of its commands ran),
    and redis-py then raises that command's `ResponseError` even with `raise_on_error=False`; the
    chunks before it stay applied, and the generator stops.

    Not atomic: each chunk is a separate round trip, and without `transaction` other clients'
    commands can run between any two commands. Works on a `RedisCluster` too (its pipeline
    groups each chunk by node).
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    iterator = iter(commands)
    while chunk := list(itertools.islice(iterator, size)):
        with client.pipeline(transaction=transaction) as pipe:
            for args in chunk:
                pipe.execute_command(*args)
            yield from pipe.execute(raise_on_error=False)


def async_client(client, max_connections: int = 50, client_name: str | None = None) -> redis.asyncio.Redis:
    """A `redis.asyncio.Redis` of `client`'s server whose pool opens at most `max_connections` connections.

    Every command a coroutine awaits takes a connection from the pool for its round trip; when
    all are busy, a `BlockingConnectionPool` makes the next coroutine wait for one (up to 10 s).
    redis-py 8's plain asyncio `ConnectionPool` would raise `MaxConnectionsError` instead, beyond
    its default of 100. `client_name` (CLIENT SETNAME on every connection) lets CLIENT LIST count
    them. Close it with `await aclient.aclose()` and `await aclient.connection_pool.disconnect()`.

    Caveat: copies host, port, db, credentials and timeouts only (no TLS, no retry policy).
    """
    settings = {name: value for name, value in client.connection_pool.connection_kwargs.items()
                if name in _ASYNC_SETTINGS}
    pool = redis.asyncio.BlockingConnectionPool(max_connections=max_connections, timeout=10,
                                                client_name=client_name, **settings)
    return redis.asyncio.Redis(connection_pool=pool)


async def get_concurrently(aclient: redis.asyncio.Redis, names: Sequence[str]) -> list:
    """GET every name as its own coroutine, all awaited together (`asyncio.gather`).

    Commands: one GET per name, each a round trip of its own on a connection of the pool: as many
    are in flight at once as the pool has connections, so the pool grows to its maximum. Concurrency
    overlaps the waiting, but the client still builds, sends and parses every command separately.
    Not atomic: other clients' commands run in between.
    """
    return await asyncio.gather(*(aclient.get(name) for name in names))


async def get_pipelined(aclient: redis.asyncio.Redis, names: Sequence[str], size: int | None = None) -> list:
    """GET every name in pipelines of `size` commands (None: all in one), awaited one after the other.

    Commands: `len(names) / size` round trips of `size` GETs, on one connection of the pool at a
    time. Not atomic (`transaction=False`): other clients' commands may run between the GETs.
    """
    size = size or len(names) or 1
    values = []
    for first in range(0, len(names), size):
        async with aclient.pipeline(transaction=False) as pipe:
            for name in names[first:first + size]:
                pipe.get(name)
            values += await pipe.execute()
    return values


def run_coroutine(coroutine: Coroutine[object, object, T], timeout: float = 60) -> T:
    """Run `coroutine` to its end from synchronous code and return its result.

    `asyncio.run` refuses to start where an event loop is already running, and Jupyter's kernel
    runs one (a notebook cell may simply `await` instead). So the coroutine gets a loop of its own
    in a worker thread; this call waits at most `timeout` seconds for it.
    """
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return worker.submit(asyncio.run, coroutine).result(timeout=timeout)
    finally:
        worker.shutdown(wait=False)  # after a timeout, do not wait for the stuck loop as well
