"""Checkers for chapter 04's exercises (see `course_lib.exercises` for the pattern).

Keys written, all under `course:streams:exercise:`: `{ex}:<name>` (streams with consumer groups)
and `{ex}:<name>:dead` (dead-letter streams). `evaluate` deletes them before and after each check.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from course_lib.exercises import ExerciseFailed, exercise_prefix
from course_lib.streams import entries


def _pending_ids(client, stream: str, group: str) -> list[str]:
    return [item["message_id"] for item in client.xpending_range(stream, group, min="-", max="+", count=100)]


def check_ensure_group(client, solution) -> None:
    """Idempotent group creation

    `solution(client, stream, group)` makes sure consumer group `group` exists on `stream`: it creates
    the stream if there is none, delivers the entries already in the stream, and can be called again
    (on every restart of a worker) without an error.
    """
    prefix = exercise_prefix(check_ensure_group) + "{ex}:"
    fresh = prefix + "fresh"
    solution(client, fresh, "mailer")
    if client.type(fresh) != "stream":
        raise ExerciseFailed("the stream does not exist after the first call: create it with the group (MKSTREAM)")
    try:
        solution(client, fresh, "mailer")
    except ResponseError as error:
        raise ExerciseFailed(f"the second call raised `{error}`: catch BUSYGROUP (and only BUSYGROUP)") from None
    if [group["name"] for group in client.xinfo_groups(fresh)] != ["mailer"]:
        raise ExerciseFailed("expected exactly one group named 'mailer' on the stream")
    existing = prefix + "existing"
    client.xadd(existing, {"order": "41"})
    solution(client, existing, "mailer")
    if not entries(client.xreadgroup("mailer", "checker", {existing: ">"}, count=10)):
        raise ExerciseFailed("an order added before the group existed was never delivered: start the group at id 0, "
                             "not at '$' (which means 'only entries added from now on')")
    not_a_stream = prefix + "not-a-stream"
    client.set(not_a_stream, "a string")
    try:
        solution(client, not_a_stream, "mailer")
    except ResponseError:
        return
    raise ExerciseFailed("creating a group on a key holding a string returned quietly: swallow only the BUSYGROUP "
                         "error, let every other error (here WRONGTYPE) reach the caller")


def check_ack_after_processing(client, solution) -> None:
    """Acknowledge only after the work is done

    `solution(client, stream, group, consumer, handler)` reads up to 10 new entries for `consumer`
    (block at most 500 ms) and calls `handler(fields)` for each; it acknowledges an entry only once
    its handler has returned. If a handler raises, that entry stays pending and the others go on.
    Returns how many entries were handled.
    """
    stream = exercise_prefix(check_ack_after_processing) + "{ex}:orders"
    client.xgroup_create(stream, "mailer", id="0", mkstream=True)
    ids = {name: client.xadd(stream, {"order": name}) for name in ("a", "b", "boom", "c")}
    handled: list[str] = []
    acked_early: list[str] = []

    def handler(fields):
        name = fields["order"]
        if ids[name] not in _pending_ids(client, stream, "mailer"):
            acked_early.append(name)
        if name == "boom":
            raise RuntimeError("the mail server refused order boom")
        handled.append(name)

    returned = solution(client, stream, "mailer", "worker-1", handler)
    if acked_early:
        raise ExerciseFailed(f"orders {acked_early} were acknowledged before their handler ran: a crash during the "
                             "work would lose them. XACK after the handler returns (and never read with NOACK)")
    if sorted(handled) != ["a", "b", "c"]:
        raise ExerciseFailed(f"the handler completed for {sorted(handled)}, expected ['a', 'b', 'c']: call it for "
                             "every entry, and keep going when one raises")
    pending = _pending_ids(client, stream, "mailer")
    if pending != [ids["boom"]]:
        names = sorted(name for name, entry_id in ids.items() if entry_id in pending)
        raise ExerciseFailed(f"pending afterwards: {names}, expected only ['boom']: XACK each entry whose handler "
                             "returned, and leave the failed one unacknowledged")
    if returned != 3:
        raise ExerciseFailed(f"return how many entries were handled (3), got {returned!r}")


def check_claim_or_dead_letter(client, solution) -> None:
    """Claim, retry, dead-letter

    `solution(client, stream, group, consumer, dead_stream, max_deliveries, handler)` claims every
    pending entry of `group` (XAUTOCLAIM, min idle time 0). An entry that has now been delivered more
    than `max_deliveries` times is added to `dead_stream` (its fields) and acknowledged, without
    calling `handler`; the others go to `handler(fields)` and are acknowledged when it returns.
    """
    prefix = exercise_prefix(check_claim_or_dead_letter) + "{ex}:"
    stream, dead, group = prefix + "orders", prefix + "orders:dead", "mailer"
    client.xgroup_create(stream, group, id="0", mkstream=True)
    ids = {name: client.xadd(stream, {"order": name}) for name in ("fresh", "twice", "poison")}
    client.xreadgroup(group, "crashed-worker", {stream: ">"}, count=10)  # each delivered once, never acked
    # earlier rescues that failed: "twice" has now been delivered 2 times, "poison" 3 times
    for name in ("twice", "poison", "poison"):
        client.xclaim(stream, group, "crashed-worker", 0, [ids[name]])
    handled: list[str] = []
    solution(client, stream, group, "rescuer", dead, 3, lambda fields: handled.append(fields["order"]))
    dead_orders = sorted(fields.get("order", "?") for _, fields in client.xrange(dead, "-", "+")) \
        if client.exists(dead) else []
    if "poison" in handled:
        raise ExerciseFailed("the entry delivered 3 times before was handled a 4th time: once the claim makes its "
                             "delivery count exceed max_deliveries (see XPENDING's times_delivered), dead-letter it")
    if dead_orders != ["poison"]:
        raise ExerciseFailed(f"the dead-letter stream holds {dead_orders}, expected ['poison']: only entries now "
                             "delivered MORE than max_deliveries times go there, with their fields")
    if sorted(handled) != ["fresh", "twice"]:
        raise ExerciseFailed(f"handled {sorted(handled)}, expected ['fresh', 'twice']: claim every pending entry "
                             "(min idle time 0, start at 0-0) and pass each one still under the limit to handler")
    left = client.xpending(stream, group)["pending"]
    if left:
        raise ExerciseFailed(f"{left} entries are still pending: acknowledge handled entries and dead-lettered ones")
