"""Checkers for chapter 04's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:streams:exercise:`: `{ex}:<name>` (streams with consumer groups)
and `{ex}:<name>:dead` (dead-letter streams). `evaluate` deletes them before and after each check.
"""

from __future__ import annotations

import time

import redis
from redis.exceptions import ResponseError

from course_lib.exercises import ExerciseFailed, exercise_prefix, returned
from course_lib.exercises.adversary import Adversary, SimulatedCrash, every_crash
from course_lib.keys import delete_prefix
from course_lib.streams import ensure_group, entries

BLOCK_BOUND = 0.95  # seconds: the ack exercise may block 500 ms; a machine under load adds a little
SOCKET_BOUND = 1.5  # seconds: a read still blocked after this long is cut off (BLOCK 0 waits forever)
ROUND_TRIP_BOUND = 3000  # the claim exercise's backlog of 251 needs about 500; a loop that never ends hits this
PAGE_BOUND = 1000  # XAUTOCLAIM's COUNT: a larger page is one command that holds the server while it claims


def _pending(client, stream: str, group: str) -> dict[str, dict]:
    """Pending entries by id: consumer and times_delivered (XPENDING, extended form, every page)."""
    found: dict[str, dict] = {}
    start = "-"
    while page := client.xpending_range(stream, group, min=start, max="+", count=500):
        found.update((item["message_id"], item) for item in page)
        start = "(" + page[-1]["message_id"]
    return found


def _group(client, stream: str, name: str) -> dict | None:
    return next((group for group in client.xinfo_groups(stream) if group["name"] == name), None)


def _bounded_client(client) -> redis.Redis:
    """A client of the same server whose reads give up after SOCKET_BOUND seconds, without retrying."""
    settings = {**client.connection_pool.connection_kwargs, "socket_timeout": SOCKET_BOUND, "retry": None}
    return redis.Redis(connection_pool=redis.ConnectionPool(**settings))


def _call_ensure(solution, client, stream: str, group: str, start: str, when: str):
    try:
        return solution(client, stream, group, start)
    except ResponseError as error:
        if str(error).startswith("BUSYGROUP"):
            raise ExerciseFailed(f"{when}, your function raised `{error}`: a group that already exists is not an "
                                 "error for this function") from None
        raise


def check_ensure_group(client, solution) -> None:
    """Idempotent group creation

    `solution(client, stream, group, start)` makes sure consumer group `group` exists on `stream`,
    through `client`: if there is none it creates it at `start` (`"0"`: deliver the entries already
    in the stream; `"$"`: only entries added from now on), creating an empty stream if there is no
    key (empty: no placeholder entry). It is called on every start of every worker, so it must be idempotent: a group that already
    exists is left exactly as it is (its position and its pending entries survive), another app
    server creating the same group at the same moment is not an error, and every other error
    (WRONGTYPE, for instance) reaches the caller.
    """
    prefix = exercise_prefix(check_ensure_group) + "{ex}:"

    # An empty keyspace: the stream is created with the group.
    fresh = prefix + "fresh"
    with Adversary(client) as adversary:
        _call_ensure(solution, adversary.client, fresh, "mailer", "0", "on a new stream")
        adversary.require_used()
    if client.type(fresh) != "stream" or _group(client, fresh, "mailer") is None:
        raise ExerciseFailed("after the first call there is no stream with the group 'mailer': the key did not exist, "
                             "so the group's creation must create the (empty) stream too")
    if client.xlen(fresh):
        raise ExerciseFailed(f"on a new stream your function left {client.xlen(fresh)} entry in it: a placeholder "
                             "entry is a fake order that every group created at '0' delivers. Create the stream "
                             "empty")

    # A stream with history: "0" delivers it, "$" does not (and both deliver what comes next).
    for start, expected in (("0", ["41", "42", "43"]), ("$", ["43"])):
        stream = prefix + ("history" if start == "0" else "recent")
        for order in ("41", "42"):
            client.xadd(stream, {"order": order})
        _call_ensure(solution, client, stream, "mailer", start, "on a stream without groups")
        client.xadd(stream, {"order": "43"})
        reply = client.xreadgroup("mailer", "checker", {stream: ">"}, count=10)
        got = [fields["order"] for _, fields in entries(reply)]
        if got != expected:
            raise ExerciseFailed(f"created with start={start!r} on a stream holding orders 41 and 42, the group "
                                 f"delivered {got} once 43 was added, expected {expected}: create the group at the "
                                 "`start` it is given")

    # The group exists, with a position and a pending entry: a worker restarts and calls again.
    stream = prefix + "running"
    client.xgroup_create(stream, "mailer", id="0", mkstream=True)
    ids = [client.xadd(stream, {"order": str(n)}) for n in range(3)]
    client.xreadgroup("mailer", "worker-1", {stream: ">"}, count=2)  # 2 delivered, unacknowledged
    for start in ("0", "$"):
        _call_ensure(solution, client, stream, "mailer", start, "on a group that already existed")
        group, pending = _group(client, stream, "mailer"), _pending(client, stream, "mailer")
        if group is None:
            raise ExerciseFailed("calling it on a group that already existed removed the group")
        if sorted(pending) != ids[:2]:
            raise ExerciseFailed(f"calling it again on a running group left {len(pending)} pending entries instead of 2: "
                                 "the group was destroyed or reset, and a crashed worker's entries with it. An "
                                 "existing group must be left as it is")
        if group["last-delivered-id"] != ids[1]:
            raise ExerciseFailed(f"calling it again (start={start!r}) moved the group's position: entries would be "
                                 "delivered twice or skipped. An existing group must be left as it is")

    # Check-then-create: another app server creates the group between the learner's commands.
    race = prefix + "race"

    def race_setup() -> None:
        delete_prefix(client, race)
        client.xadd(race, {"order": "1"})

    race_setup()
    with Adversary(client) as counting:
        counting.after(race, lambda other: None, at=10**6)  # counts the learner's commands on the stream
        solution(counting.client, race, "mailer", "0")
        touches = counting.touches(race)
    for at in range(1, touches + 1):
        race_setup()
        with Adversary(client) as adversary:
            # the other app server runs the course's ensure_group, which tolerates the learner's group
            adversary.after(race, lambda other: ensure_group(other, race, "mailer", "0"), at=at)
            _call_ensure(solution, adversary.client, race, "mailer", "0",
                         f"when another app server created the group right after your command {at} on the stream "
                         "(a check before creating cannot see what happens after it)")

    # Any other error must reach the caller.
    not_a_stream = prefix + "not-a-stream"
    client.set(not_a_stream, "a string")
    try:
        solution(client, not_a_stream, "mailer", "0")
    except ResponseError:
        return
    raise ExerciseFailed("creating a group on a key holding a string returned quietly: only the 'group already "
                         "exists' error is expected; every other error (here WRONGTYPE) must reach the caller")


def check_ack_after_processing(client, solution) -> None:
    """Acknowledge only after the work is done

    `solution(client, stream, group, consumer, handler)` reads the new entries for `consumer`
    in one XREADGROUP ... COUNT 10 ... > through `client` (so up to 10; a smaller COUNT leaves
    entries unread), waiting at most 500 ms when there is nothing new, and calls
    `handler(fields)` for each; it acknowledges an entry only once its handler has returned, and
    never deletes one (other groups read the same stream). If a handler raises, that entry stays
    pending (held by `consumer`) and the others go on. Returns how many entries were handled, an
    int (0 when there was nothing new). The wait is read from the BLOCK the learner sends (timing
    alone would let 800 ms through on a fast machine).
    """
    stream = exercise_prefix(check_ack_after_processing) + "{ex}:orders"
    client.xgroup_create(stream, "mailer", id="0", mkstream=True)
    ids = {name: client.xadd(stream, {"order": name}) for name in ("a", "b", "boom", "c")}
    handled: list[str] = []
    acked_early: list[str] = []
    consumer = "worker-7"  # not the notebook's worker-1: the argument must be used

    def handler(fields):
        name = fields["order"]
        if ids.get(name) not in _pending(client, stream, "mailer"):
            acked_early.append(name)
        if name == "boom":
            raise RuntimeError("the mail server refused order boom")
        handled.append(name)

    bounded = _bounded_client(client)
    try:
        with Adversary(bounded) as adversary:
            got = solution(adversary.client, stream, "mailer", consumer, handler)
            adversary.require_used()
        if acked_early:
            raise ExerciseFailed(f"orders {acked_early} were acknowledged before their handler ran: a crash during the "
                                 "work would lose them. Acknowledge after the handler returns (and never read with NOACK)")
        if sorted(handled) != ["a", "b", "c"]:
            raise ExerciseFailed(f"the handler completed for {sorted(handled)}, expected ['a', 'b', 'c']: call it for "
                                 "every new entry, and keep going when one raises")
        pending = _pending(client, stream, "mailer")
        if list(pending) != [ids["boom"]]:
            names = sorted(name for name, entry_id in ids.items() if entry_id in pending)
            raise ExerciseFailed(f"pending afterwards: {names}, expected only ['boom']: acknowledge each entry whose "
                                 "handler returned, and leave the failed one unacknowledged")
        if client.xlen(stream) != len(ids):
            raise ExerciseFailed(f"the stream held {len(ids)} entries and holds {client.xlen(stream)} after your call: "
                                 "acknowledging marks an entry done for this group; deleting it (XDEL) takes it from "
                                 "every other group and from the stream's history")
        if pending[ids["boom"]]["consumer"] != consumer:
            raise ExerciseFailed(f"the failed entry is pending for {pending[ids['boom']]['consumer']!r}, not for the "
                                 f"`consumer` argument ({consumer!r}): read as the consumer you are given")
        if returned(got, int, "how many entries were handled, an int") != 3 or isinstance(got, bool):
            raise ExerciseFailed(f"return how many entries were handled (3 here), got {got!r}")

        # A burst of 12: one call handles at most 10, the rest wait for the next call.
        handled.clear()
        for n in range(12):
            ids[f"burst-{n}"] = client.xadd(stream, {"order": f"burst-{n}"})
        got = solution(bounded, stream, "mailer", consumer, handler)
        if len(handled) != 10 or got != 10:
            raise ExerciseFailed(f"with 12 new entries one call handled {len(handled)} and returned {got!r}: read at "
                                 "most 10 at a time (COUNT), so one call's work stays bounded")
        client.xreadgroup("mailer", "checker", {stream: ">"}, count=10)  # nothing new is left after this

        # Nothing new: the call waits at most 500 ms, then returns 0.
        began = time.monotonic()
        with Adversary(bounded) as adversary:
            try:
                got = solution(adversary.client, stream, "mailer", consumer, handler)
            except redis.TimeoutError:
                raise ExerciseFailed(f"with nothing new your read was still waiting after {SOCKET_BOUND:g} s (the "
                                     "checker cut it off): BLOCK 0 means 'wait forever'; bound the wait to at most "
                                     "500 ms") from None
            blocks = [int(command[command.index("BLOCK") + 1]) for batch in adversary.sent for command in batch
                      if command[0].upper() == "XREADGROUP" and "BLOCK" in command]
        waited = time.monotonic() - began
        if any(block > 500 for block in blocks):
            raise ExerciseFailed(f"your read asks the server to wait up to {max(blocks)} ms (BLOCK is in "
                                 "milliseconds): block at most 500 ms")
        if waited > BLOCK_BOUND:
            raise ExerciseFailed(f"with nothing new your function waited {waited:.1f} s: block at most 500 ms")
        if got != 0 or isinstance(got, bool):
            raise ExerciseFailed(f"with nothing new your function returned {got!r}: return 0, the number handled")
    finally:
        bounded.close()


def _claim_setup(client, stream: str, group: str, names: list[str], delivered: dict[str, int]) -> dict:
    """A group whose entries `names` a crashed worker holds, each delivered `delivered.get(name, 1)` times.

    Deletes every key starting with `stream` first (its dead-letter stream `<stream>:dead` too).
    """
    delete_prefix(client, stream)
    client.xgroup_create(stream, group, id="0", mkstream=True)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xadd(stream, {"order": name})
        ids = dict(zip(names, pipe.execute()))
    if names:
        client.xreadgroup(group, "crashed-worker", {stream: ">"}, count=len(names))  # each delivered once, never acked
    for name, times in delivered.items():  # earlier rescues that failed
        for _ in range(times - 1):
            client.xclaim(stream, group, "crashed-worker", 0, [ids[name]])
    return ids


def _dead_orders(client, dead: str) -> list[str]:
    return sorted(fields.get("order", "?") for _, fields in client.xrange(dead, "-", "+")) if client.exists(dead) else []


def _claim_bounded(client, solution, stream: str, dead: str, handler, backlog: int) -> list[int]:
    """Run the claim solution, cut off (with a hint) if it has not stopped after ROUND_TRIP_BOUND round trips.

    Returns the COUNT of each XAUTOCLAIM it sent (100 where it gave none: the server's default).
    """
    bound = max(ROUND_TRIP_BOUND, 8 * backlog)
    with Adversary(client, crash_after=bound) as adversary:
        try:
            solution(adversary.client, stream, "mailer", "rescuer", dead, 3, handler)
        except SimulatedCrash:
            raise ExerciseFailed(f"with {backlog} entries pending your function sent {bound} round trips "
                                 "and had not stopped: an entry claimed with min idle time 0 can be claimed again at "
                                 "once, so follow the cursor to 0-0 instead of starting over") from None
        adversary.require_used()
        return [int(command[command.index("COUNT") + 1]) if "COUNT" in command else 100
                for batch in adversary.sent for command in batch if command[0].upper() == "XAUTOCLAIM"]


def check_claim_or_dead_letter(client, solution) -> None:
    """Claim, retry, dead-letter

    `solution(client, stream, group, consumer, dead_stream, max_deliveries, handler)` claims every
    pending entry of `group` for `consumer` (XAUTOCLAIM with min idle time 0, following its cursor:
    one call returns at most one page of COUNT entries). An entry that has now been delivered more
    than `max_deliveries` times is moved to `dead_stream` (with its fields) without calling `handler`:
    the copy and its acknowledgement happen together, so a crash between two commands can neither
    lose the entry nor leave it both dead-lettered and pending. The others go to `handler(fields)`
    and are acknowledged once it returns (no entry is deleted from `stream`: other groups read it);
    an entry whose handler raises stays pending and the others go on. Every entry is claimed once per call; with nothing pending the call does nothing. Pages
    are bounded (COUNT at most 1000), so a backlog of any size is claimed page by page: a backlog
    that fits in the learner's one page is followed by one a page larger.
    """
    prefix = exercise_prefix(check_claim_or_dead_letter) + "{ex}:"
    stream, dead = prefix + "orders", prefix + "orders:failed"  # not the notebook's <stream>:dead: use the argument
    names = ["fresh", "twice", "poison", "boom"]
    handled: list[str] = []

    def handler(fields):
        if fields.get("order") == "boom":
            raise RuntimeError("the mail server refused order boom")
        handled.append(fields["order"])

    # Nothing pending: the call returns without writing anything.
    _claim_setup(client, stream, "mailer", [], {})
    _claim_bounded(client, solution, stream, dead, handler, 0)
    if handled or client.exists(dead):
        raise ExerciseFailed("with nothing pending the function handled or dead-lettered something")

    # "twice" was delivered 2 times before, "poison" 3 times: this claim makes it 4 > max_deliveries 3.
    ids = _claim_setup(client, stream, "mailer", names, {"twice": 2, "poison": 3})
    _claim_bounded(client, solution, stream, dead, handler, len(names))
    dead_orders, pending = _dead_orders(client, dead), _pending(client, stream, "mailer")
    if "poison" in handled:
        raise ExerciseFailed("the entry delivered 3 times before was handled a 4th time: once the claim makes its "
                             "delivery count exceed max_deliveries (see XPENDING's times_delivered), dead-letter it")
    if "boom" in dead_orders or pending.get(ids["boom"], {}).get("times_delivered", 2) != 2:
        raise ExerciseFailed("the entry whose handler raised (delivered once before) was claimed again within the "
                             "same call: claim each entry once per call, following the cursor")
    if dead_orders != ["poison"]:
        raise ExerciseFailed(f"the dead-letter stream (`dead_stream`) holds {dead_orders}, expected ['poison']: only entries now "
                             "delivered MORE than max_deliveries times go there, with their fields")
    if sorted(handled) != ["fresh", "twice"]:
        raise ExerciseFailed(f"handled {sorted(handled)}, expected ['fresh', 'twice']: claim every pending entry "
                             "(min idle time 0) and pass each one still under the limit to the handler; keep going "
                             "when one raises")
    if client.xlen(stream) != len(names):
        raise ExerciseFailed(f"the stream held {len(names)} entries and holds {client.xlen(stream)} after your call: "
                             "acknowledging (or dead-lettering) marks an entry done for this group; deleting it (XDEL) "
                             "takes it from every other group and from the stream's history")
    left = sorted(name for name, entry_id in ids.items() if entry_id in pending)
    if left != ["boom"]:
        raise ExerciseFailed(f"pending afterwards: {left}, expected only ['boom'] (its handler raised): acknowledge "
                             "the handled entries and the dead-lettered one, and only those")

    # A backlog larger than one XAUTOCLAIM page (100 by default): the cursor must be followed to the end.
    def claim_backlog(size: int) -> list[int]:
        backlog = [f"order-{n}" for n in range(size)] + ["boom"]
        _claim_setup(client, stream, "mailer", backlog, {})
        handled.clear()
        pages = _claim_bounded(client, solution, stream, dead, handler, len(backlog))
        if max(pages, default=0) > PAGE_BOUND:
            raise ExerciseFailed(f"your XAUTOCLAIM asks for {max(pages)} entries at once: one command that claims "
                                 "that many holds the server meanwhile, and a backlog can always be larger. Claim "
                                 f"pages of at most {PAGE_BOUND} and follow the cursor")
        if len(handled) != len(backlog) - 1:
            raise ExerciseFailed(f"with {len(backlog)} entries pending only {len(handled)} were handled: XAUTOCLAIM "
                                 "returns one page at a time; call it again from the cursor it returns until that "
                                 "is 0-0")
        if _dead_orders(client, dead):
            raise ExerciseFailed("with a backlog, entries were dead-lettered that had not been delivered too often: "
                                 "claim each entry once per call")
        return pages

    pages = claim_backlog(250)
    if len(pages) == 1 and pages[0] > 250:  # the learner's one page held the whole backlog: now it must not
        claim_backlog(pages[0] + 1)  # orders beyond one page, and the failing entry

    # The crash: after every round trip, each entry must be handled, pending, or dead-lettered, and only one of these.
    def setup() -> None:
        handled.clear()
        ids.update(_claim_setup(client, stream, "mailer", names, {"twice": 2, "poison": 3}))

    def invariant() -> str | None:
        pending, dead_orders = _pending(client, stream, "mailer"), _dead_orders(client, dead)
        for name, entry_id in ids.items():
            if entry_id in pending and name in dead_orders:
                return f"left order {name!r} both in the dead-letter stream and pending: it would be dead-lettered again"
            if entry_id not in pending and name not in dead_orders and name not in handled:
                return f"left order {name!r} neither pending nor dead-lettered nor handled: it is lost"
        return None

    every_crash(client, setup, lambda learner: solution(learner, stream, "mailer", "rescuer", dead, 3, handler),
                invariant, "moving an entry to the dead letters")
