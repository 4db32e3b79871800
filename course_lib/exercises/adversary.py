"""The checkers' adversary: the other app servers, the crash, and the counting a learner's answer must survive.

A checker that only calls the learner's function from threads of one process cannot tell a right
answer from a wrong one: a `threading.Lock` serialises the threads and hides every race. So a
checker hands the learner's function `Adversary(client).client`, whose connections it controls:

- **the other app server** (`after`): right after the learner's n-th command that names a key has
  run, another connection (another app server) runs the checker's code, before the learner's next
  command is sent. Deterministic: no thread timing. A lock inside the learner's process cannot stop
  it, WATCH sees it and must retry, and a Lua script or MULTI/EXEC cannot be split by it: their
  commands run as one, so the other app server acts only before or after them;
- **the crash** (`crash_after`): the learner's app server dies right after its k-th round trip, so
  its later commands are never sent. `SimulatedCrash` derives from BaseException as a real crash
  cannot be caught either; `every_crash` repeats a scenario for every k and checks an invariant;
- **counting**: round trips, commands per round trip, and which commands (from `RoundTripCounter`),
  exact and client side;
- **several processes** (`run_in_processes`): where a contract says "several app servers at once",
  the learner's function really runs in several processes (forked, so a function defined in a
  notebook works), where an in-process lock is one lock per process, as in production.

Keys written: none of its own; the checker's code run by `after` writes what the checker says.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import redis

from course_lib.exercises import ExerciseFailed
from course_lib.pipelines import RoundTripCounter, _CountingMixin


class SimulatedCrash(BaseException):
    """The learner's app server died here: nothing after this point of its code ran or was sent."""


class _AfterTheCrash(SimulatedCrash, redis.ConnectionError):
    """A command sent after the crash. Also a ConnectionError, so that redis-py's own clean-up on the
    way out (a watching pipeline's UNWATCH on exit or garbage collection) drops the dead connection
    quietly instead of printing an ignored exception."""


def _name(argument) -> str:
    return argument.decode(errors="replace") if isinstance(argument, bytes) else str(argument)


def _values(response) -> int:
    """How many values a reply carries: an aggregate counts its members (a map its keys and values), anything else 1."""
    if isinstance(response, dict):
        return sum(_values(k) + _values(v) for k, v in response.items())
    if isinstance(response, (list, tuple, set)):
        return sum(_values(item) for item in response)
    return 1


@dataclass
class _Interference:
    key: str
    at: int
    run: Callable
    touches: int = 0
    result: object = None
    fired: bool = False
    command: str = ""  # the learner's command it followed, e.g. "GET"
    shared: bool = False  # run on the learner's next pooled connection (`on_shared_connection`)
    armed: bool = False  # shared, due, waiting for the learner's next checkout from the pool


class _AdversaryMixin(_CountingMixin):
    """Also remembers which sent commands still await a reply, to act after the ones that ran."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._awaiting: list[tuple] = []  # commands sent, in order, whose replies are not read yet
        self._queued: list[tuple] | None = None  # inside MULTI: commands queued, not run yet
        self._sending: list[tuple] = []  # commands packed for the next write to the socket

    def send_command(self, *args, **kwargs):
        if not self._handshake:
            self._awaiting.append(tuple(_name(a) for a in args))
            self._sending.append(self._awaiting[-1])
        return super().send_command(*args, **kwargs)

    def pack_commands(self, commands):
        if not self._handshake:
            packed = [tuple(_name(a) for a in args) for args in commands]
            self._awaiting.extend(packed)
            self._sending.extend(packed)
        return super().pack_commands(commands)

    def send_packed_command(self, command, check_health=True):
        if not self._handshake:
            self._counter._before_round_trip()
            self._counter.sent.append(self._sending)
            self._sending = []
        return super().send_packed_command(command, check_health)

    def disconnect(self, *args, **kwargs):
        self._awaiting, self._queued, self._sending = [], None, []
        return super().disconnect(*args, **kwargs)

    def read_response(self, *args, **kwargs):
        if self._handshake or not self._awaiting:
            return super().read_response(*args, **kwargs)
        command = self._awaiting.pop(0)
        response = super().read_response(*args, **kwargs)
        self._counter.values_read += _values(response)
        self._counter._ran(self._commands_run(command, response))
        return response

    def _commands_run(self, command: tuple, response) -> list[tuple]:
        verb = command[0].upper()
        if verb == "MULTI":
            self._queued = []
            return []
        if verb == "DISCARD":
            self._queued = None
            return []
        if verb == "EXEC":
            queued, self._queued = self._queued or [], None
            return [] if response is None else queued  # None: WATCH aborted it, nothing ran
        if self._queued is not None:
            self._queued.append(command)
            return []
        return [command]


class _LendingPool(redis.ConnectionPool):
    """Before handing the learner a connection, lets a request of the same app server use it first."""

    def get_connection(self, *args, **kwargs):
        connection = super().get_connection(*args, **kwargs)
        connection._counter._lend(connection)
        return connection


class Adversary(RoundTripCounter):
    """A client for the learner's function whose connections the checker controls (see the module's docstring).

    Args:
        client: a `redis.Redis` (standalone); its connection settings are copied.
        crash_after: if given, the learner's app server dies right after this many round trips:
            the next write to the server raises `SimulatedCrash` instead, and so does every later one.

    Use `.client` for the learner, `.other` for the other app server's own connection, and
    `close()` (or `with`) at the end. `.batches` lists the commands of each round trip, `.sent`
    the same commands with their arguments (tuples of strings), e.g. to count the keys a round trip names.
    `.values_read` counts the values in the replies the learner read (a list of 12 members is 12),
    e.g. to tell "asked for the top 3" from "read everything and kept 3".
    """

    connection_mixin = _AdversaryMixin
    pool_class = _LendingPool

    def __init__(self, client: redis.Redis, crash_after: int | None = None):
        self.crash_after = crash_after
        self.crashed = False
        self._interferences: list[_Interference] = []
        self._lock = threading.Lock()
        super().__init__(client)
        self.other = redis.Redis(connection_pool=redis.ConnectionPool(**client.connection_pool.connection_kwargs))

    def reset(self) -> None:
        super().reset()
        self.batches: list[list[str]] = []
        self.sent: list[list[tuple[str, ...]]] = []
        self.values_read = 0

    def _record(self, packed: list[str]) -> None:
        super()._record(packed)
        self.batches.append(list(packed))

    def after(self, key: str, run: Callable[[redis.Redis], object], at: int = 1) -> _Interference:
        """Run `run(self.other)` once, right after the `at`-th learner command naming `key` has run.

        Returns a record whose `.fired` says whether it ran, `.command` after which learner command
        (e.g. "GET"), and `.result` what `run` returned.
        Commands queued in MULTI run (and count) at EXEC; an EXEC aborted by WATCH runs none.
        """
        interference = _Interference(key, at, run)
        self._interferences.append(interference)
        return interference

    def on_shared_connection(self, key: str, run: Callable, at: int = 1) -> _Interference:
        """Another request of the learner's own app server, sharing its client and its pool of connections.

        Right after the `at`-th learner command naming `key` has run, the next time the learner's
        client takes a connection from its pool, `run(connection)` runs first on that very
        connection (raw `send_command` / `read_response`; not counted, not followed), as a
        concurrent request handed the same pooled connection would. Its EXEC clears every WATCH of
        the connection: a WATCH sent on the shared client is lost, one on a pipeline (which keeps
        its connection from WATCH to EXEC) is not, and then `run` may never run (`.fired` False).
        """
        interference = _Interference(key, at, run, shared=True)
        self._interferences.append(interference)
        return interference

    def _lend(self, connection) -> None:
        for interference in self._interferences:
            if interference.armed and not interference.fired:
                interference.fired = True
                connection.connect()  # a new connection's handshake first, on its own
                connection._handshake = True  # this request's commands are not the learner's
                try:
                    interference.result = interference.run(connection)
                finally:
                    connection._handshake = False

    def _before_round_trip(self) -> None:
        if self.crashed:
            raise _AfterTheCrash(f"the app server died after round trip {self.round_trips}")
        if self.crash_after is not None and self.round_trips >= self.crash_after:
            self.crashed = True
            raise SimulatedCrash(f"the app server died after round trip {self.round_trips}")

    def _ran(self, commands: list[tuple]) -> None:
        due = []
        with self._lock:
            for command in commands:
                for interference in self._interferences:
                    if not interference.fired and interference.key in command[1:]:
                        interference.touches += 1
                        if interference.touches == interference.at:
                            interference.command = command[0].upper()
                            if interference.shared:
                                interference.armed = True
                            else:
                                interference.fired = True
                                due.append(interference)
        for interference in due:
            interference.result = interference.run(self.other)

    def touches(self, key: str) -> int:
        """How many learner commands naming `key` ran, as counted by an `after(key, ...)` set before the call."""
        return max((i.touches for i in self._interferences if i.key == key), default=0)

    def require_used(self) -> None:
        """Fail with a clear hint if the learner's function sent nothing through `.client`."""
        if not self.round_trips:
            raise ExerciseFailed("your function sent no command through the `client` it was given: use that "
                                 "argument (not the notebook's `r`), the checker plays other app servers against it")

    def step(self, k: int) -> str:
        """Round trip k (1-based) for a hint: `round trip 2 of 3 (DECRBY)`."""
        return f"round trip {k} of {self.round_trips} ({', '.join(self.batches[k - 1])})"

    def close(self) -> None:
        super().close()
        self.other.close()
        self.other.connection_pool.disconnect()

    def __enter__(self) -> "Adversary":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def bounded(client, round_trips: int = 1000) -> Iterator[Adversary]:
    """An `Adversary` whose learner is stopped after `round_trips` round trips: a loop that never ends fails.

    Use it for the learner's first calls, where a retry that can never succeed (its own write, outside
    MULTI, aborts its WATCH every time) would otherwise hang the notebook.

    Raises:
        ExerciseFailed: the learner's function had not returned after `round_trips` round trips.
    """
    adversary = Adversary(client, crash_after=round_trips)
    try:
        yield adversary
    except SimulatedCrash:
        raise ExerciseFailed(f"your function sent {round_trips} round trips and had not returned: a loop that never "
                             "ends (a retry that can never succeed, e.g. a write of your own outside MULTI aborts "
                             "your WATCH every time). Make every loop end") from None
    finally:
        adversary.close()


def every_crash(client, setup: Callable[[], None], call: Callable[[redis.Redis], object],
                invariant: Callable[[], str | None], what: str) -> int:
    """Crash the learner's app server after each of its round trips in turn; the invariant must hold every time.

    First `setup()` and `call(adversary_client)` run without a crash, to count the round trips n.
    Then for k = 1 .. n - 1: `setup()` again, the call crashes right after round trip k, and
    `invariant()` returns None if the data is sound, or what is wrong with it (e.g. "the counter
    has no TTL"). Returns n.

    Raises:
        ExerciseFailed: the invariant broke after some crash (the hint names the round trip and its
            commands), or the function swallowed the crash and went on.
    """
    setup()
    with Adversary(client) as clean:
        call(clean.client)
        clean.require_used()
        rounds, batches = clean.round_trips, clean.batches
    for k in range(1, rounds):
        setup()
        with Adversary(client, crash_after=k) as crashing:
            try:
                call(crashing.client)
            except SimulatedCrash:
                pass
            else:
                if crashing.crashed:
                    raise ExerciseFailed("your function caught the simulated crash and went on: do not catch "
                                         "BaseException (a real crash cannot be caught at all)")
        problem = invariant()
        if problem:
            commands = ", ".join(batches[k - 1]) if k <= len(batches) else "?"
            raise ExerciseFailed(f"{what}: the app server died right after round trip {k} of {rounds} ({commands}) "
                                 f"and {problem}. Two round trips that must both happen can be split by a crash")
    return rounds


def every_interleaving(client, key: str, setup: Callable[[], None], call: Callable[[redis.Redis], object],
                       other: Callable[[redis.Redis], object], judge: Callable[[int, object], None],
                       shared: bool = False) -> int:
    """The other app server acts right after each of the learner's commands naming `key`, in turn.

    First `setup()` and `call(adversary_client)` run with no interference, to count the learner's
    commands that name `key`, n. Then for at = 1 .. n: `setup()` again, `call` with `other(other
    client)` run right after the at-th of those commands, and `judge(at, what call returned)`,
    which raises ExerciseFailed if the outcome is wrong. Returns n. With `shared`, `other` is a
    request of the learner's own app server instead (`Adversary.on_shared_connection`): it gets
    the connection the learner takes next, and may not run at all.

    Raises:
        ExerciseFailed: from `judge`, or the function sent nothing through the client it was given.
    """
    setup()
    with Adversary(client) as counting:
        counted = counting.after(key, lambda _other: None, at=0)  # at 0 never fires: it only counts
        call(counting.client)
        counting.require_used()
    for at in range(1, counted.touches + 1):
        setup()
        with Adversary(client) as adversary:
            (adversary.on_shared_connection if shared else adversary.after)(key, other, at=at)
            judge(at, call(adversary.client))
    return counted.touches


class ProcessesFailed(RuntimeError):
    """A function run by `run_in_processes` raised, or did not return in time."""


def _child(work: Callable, slot: int, start, results) -> None:
    # A forked child shares the notebook's output streams: keep its output out of the notebook.
    sys.stdout = sys.stderr = open(os.devnull, "w")
    try:
        start.wait(timeout=30)
        results.put((slot, True, work(slot)))
    except BaseException as error:  # reported to the parent, which says what happened
        results.put((slot, False, f"{type(error).__name__}: {error}"))


def run_in_processes(work: Callable[[int], object], processes: int, timeout: float) -> list:
    """Call `work(slot)` in `processes` forked processes released together; return their results in slot order.

    Forked, so `work` may be a closure over a function defined in a notebook. Each process must
    make its own client (a connection must not be shared across a fork). Results must pickle.
    Linux and macOS only (fork).

    Raises:
        ProcessesFailed: a process raised (its error is in the message), or had not returned
            within `timeout` seconds (it is then killed).
    """
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(processes), context.Queue()
    children = [context.Process(target=_child, args=(work, slot, start, results), daemon=True)
                for slot in range(processes)]
    for child in children:
        child.start()
    collected: dict[int, tuple[bool, object]] = {}
    try:
        for _ in children:
            slot, ok, value = results.get(timeout=timeout)
            collected[slot] = (ok, value)
    except queue.Empty:  # some process did not report in time: said below
        pass
    finally:
        for child in children:
            child.join(timeout=1)
            if child.is_alive():
                child.kill()
                child.join()
    missing = processes - len(collected)
    if missing:
        raise ProcessesFailed(f"{missing} of {processes} processes had not returned after {timeout:g} s")
    failures = [value for ok, value in collected.values() if not ok]
    if failures:
        raise ProcessesFailed(failures[0])
    return [collected[slot][1] for slot in range(processes)]

