"""Checkers for chapter 10's exercises (see `course_lib.exercises` for the pattern).

Both checkers run the learner's answer against private servers they start and kill themselves
(`course_lib.persistence`), never the shared one, and play:

- **the crash**: the server is SIGKILLed while a writer's acknowledged writes stream in, and
  started again from its folder; every acknowledged write must be there;
- **the network**: the link between a primary and its replica fails, then the learner's function
  writes; then the primary dies and the replica is promoted. Every write the learner's function
  reported as safe must be on the promoted replica;
- **the bound**: a call that waits for a replica must come back, with its answer, when none comes.

Keys written, on the private servers only: `course:persistence:exercise:counter` (a string
holding an integer). The shared server is not written to.
"""

from __future__ import annotations

import redis

from course_lib.concurrency import TimedOut
from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary
from course_lib.persistence import cut_link, durable_server, primary_and_replica, promote, surviving, write_until_killed
from course_lib.servers import ServerError


def _counter(checker) -> str:
    return exercise_prefix(checker) + "counter"


def _survives_a_kill(settings: dict[str, str], budget: int, key_name: str) -> str:
    """Start a private server with the learner's settings, write, SIGKILL, restart; return its `appendfsync` in effect."""
    try:
        with durable_server({name: str(value) for name, value in settings.items()}) as server:
            stream = write_until_killed(server, kill_after=0.5, key_name=key_name)
            server.restart()
            with server.client() as client:
                survived = surviving(client, key_name)
                policy = client.config_get("appendfsync")["appendfsync"]
    except (ServerError, TimedOut) as refused:  # refused to start, or never loaded in time
        raise ExerciseFailed(f"for a budget of {budget} s, a server would not start with your settings "
                             f"{settings!r:.120}: {str(refused).splitlines()[0]:.160}") from None
    if survived < stream.acknowledged:
        raise ExerciseFailed(f"for a budget of {budget} s, your settings {settings!r:.120}: the server acknowledged "
                             f"{stream.acknowledged} writes, was killed, and came back with {survived}: nothing on "
                             "disk held the writes since the server started (snapshots alone lose everything since "
                             "the last one)")
    return policy


def check_loss_budget(client, solution) -> None:
    """Settings for a loss budget

    `solution(budget)` returns the server settings (a dict such as {"appendonly": ...}, as given to
    `durable_server`) for a server that, after its **machine** loses power, has lost at most
    `budget` seconds of acknowledged writes, and is the fastest setting that meets the budget:
    budget 0 (no acknowledged write lost, even on a power loss) and budget 1 (about a second).
    Checked: a private server started with your settings is SIGKILLed while a writer streams
    acknowledged writes and started again from its folder: it must have every acknowledged write
    (a process crash must lose nothing); and the fsync policy in effect must meet the budget on a
    power loss, which a kill cannot show, without paying for more safety than the budget asks.
    """
    key_name = _counter(check_loss_budget)
    for budget, needed in ((0, "always"), (1, "everysec")):
        settings = returned(solution(budget), dict, "a dict of server settings")
        policy = _survives_a_kill(settings, budget, key_name)
        if budget == 0 and policy != "always":
            raise ExerciseFailed(f"for a budget of 0 s, appendfsync {policy} survived the kill because the kernel "
                                 "still had the writes; on a power loss, what was not fsynced before the reply is "
                                 "gone: only a policy that fsyncs before replying meets a budget of 0")
        if budget == 1 and policy == "no":
            raise ExerciseFailed("for a budget of 1 s, appendfsync no leaves the flush to the kernel, which may "
                                 "wait tens of seconds: a power loss can take more than a second of writes")
        if budget == 1 and policy == "always":
            raise ExerciseFailed("for a budget of 1 s, appendfsync always meets it, but pays one fsync per write "
                                 "(measured in section 3: many times slower); a cheaper policy meets a 1 s budget")


def check_confirmed_incr(client, solution) -> None:
    """An increment confirmed only once a replica has it

    `solution(client, key)` increments the integer at `key` on a primary that has one replica and
    returns True only if the increment has reached the replica, False if that is not known within
    about a second; it must always return (never wait forever). Checked on a private primary and
    replica: with the link up, increments are confirmed (True); then the network between primary and
    replica fails and your function is called again: it must answer False, within 2 s; then the
    primary is killed and the replica promoted: every increment you confirmed must be on it. Each
    call increments by one, once; a question about replicas must come after the increment (the
    commands you send are recorded).
    """
    key_name = _counter(check_confirmed_incr)
    with primary_and_replica() as (primary, replica), primary.client() as plain:
        with Adversary(plain) as adversary:
            answers = [returned(solution(adversary.client, key_name), bool, "True or False") for _ in range(3)]
        adversary.require_used()
        commands = [command for batch in adversary.sent for command in batch]
        writes = [i for i, command in enumerate(commands) if key_name in command[1:]]
        waits = [i for i, command in enumerate(commands) if command[0].upper() in ("WAIT", "WAITAOF")]
        if waits and writes and max(waits) < max(writes):
            raise ExerciseFailed("your function asked how many replicas have its write before it wrote: WAIT "
                                 "counts the replicas that have the connection's writes so far, so it must come "
                                 "after the increment")
        if not all(answers):
            raise ExerciseFailed(f"with the replica connected and in sync, your function answered {answers}: an "
                                 "increment the replica has within a second must be confirmed (True)")
        cut_link(replica)  # the network between the primary and its replica fails
        try:
            answer = returned(solution(plain, key_name), bool, "True or False")
        except redis.TimeoutError:
            raise ExerciseFailed("once the replica was unreachable, your function waited until the socket timed out "
                                 "(2 s): a wait for replicas needs a timeout, or it can wait forever") from None
        written = int(plain.get(key_name) or 0)
        if written != 4:
            raise ExerciseFailed(f"4 calls left the counter at {written} on the primary: each call increments by "
                                 "one, once")
        primary.kill()
        promote(replica)
        with replica.client() as promoted:
            on_replica = surviving(promoted, key_name)
        if answer:
            raise ExerciseFailed(f"the replica was unreachable and your function still answered True; after the "
                                 f"failover the promoted replica has {on_replica} of the {sum(answers) + 1} "
                                 "increments you confirmed: the primary's reply says nothing about its replica (ask "
                                 "the primary, after writing, on the same connection, how many replicas have the write)")
