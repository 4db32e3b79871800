"""Reliable event processing with Redis Streams: consumer groups, acknowledgements, crash recovery.

A stream is an append-only log of entries (an id `<ms>-<seq>` and a flat field map). A consumer
group hands each new entry to exactly one of its consumers and remembers it as *pending* for that
consumer until it is acknowledged (XACK). These patterns add what the guide leaves out:
creating a group twice without an error (`ensure_group`), acknowledging only after the work is
done (`process_new`), taking over the entries a dead worker left pending and moving an entry that
keeps failing to a dead-letter stream (`recover`, `dead_letter`), applying an entry's effect at most
once although it may be delivered more than once (`apply_once`), and keeping the log bounded (`append`);
a restarted worker finishing its own pending entries first (`process_own_pending`), the group's
lag (`group_lag`), removing idle consumers safely (`remove_idle_consumers`), and an effect outside
Redis, such as an e-mail, sent at most once (`idempotent`).

Neither MULTI/EXEC nor a Lua script rolls back: a command that fails at run time (WRONGTYPE, a value
that is not an integer) fails alone, and the writes before it stay. So the scripts here run every
command that can fail before their first write.

Keys written (the caller chooses the names; the chapter uses a `{orders}` hash tag so that a stream,
its dead-letter stream and its bookkeeping share one cluster slot):
- `<stream>`: stream, the events; its consumer groups live inside the same key;
- `<dead stream>`: stream, entries given up on, fields + `original_id` + `deliveries`;
- `<seen>`: set of stream ids whose effect was applied (`apply_once`);
- `<total>`: string holding an integer, an amount in cents, the effect `apply_once` applies;
- `<marks>:<entry id>`: string "started" then "done", with a TTL, one per entry (`idempotent`).

Cluster caveat: a stream is one key, so it lives on one shard and all its groups' traffic goes to
that shard's primary; spread load over several streams (e.g. one per tenant or per partition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from redis.exceptions import ResponseError

from course_lib import lua
from course_lib.concurrency import wait_for

Entry = tuple[str, dict[str, str]]  # (stream id, fields)
Handler = Callable[[str, dict[str, str]], object]


def entries(reply, keep_deleted: bool = False) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply for one stream, as a list of (id, fields).

    redis-py returns `{stream: [[entries]]}` under RESP3 and `[[stream, [entries]]]` under RESP2;
    both become one flat list. An entry deleted (trimmed) while pending comes back with no fields
    (None, or {} from redis-py 8 under RESP3; a real entry always has one): it is skipped, unless
    `keep_deleted`.
    """
    if not reply:
        return []
    groups = reply.values() if isinstance(reply, dict) else [item[1] for item in reply]
    found: list[Entry] = []
    for group in groups:
        batch = group[0] if group and isinstance(group[0], list) else group
        found += [(entry_id, fields) for entry_id, fields in batch if keep_deleted or fields]
    return found


def guide_create_group(client, stream: str, group: str) -> None:
    """The guide's group creation: XGROUP CREATE <stream> <group> $ MKSTREAM.

    Raises BUSYGROUP the second time it runs (every restart of the service). Its `$` ("only entries
    added from now on") is a legitimate choice, not the bug: see `ensure_group`.
    """
    client.xgroup_create(stream, group, id="$", mkstream=True)


def ensure_group(client, stream: str, group: str, start_id: str = "0") -> bool:
    """Create the consumer group if it does not exist; safe to call on every start of every worker.

    Commands: XGROUP CREATE <stream> <group> <start_id> MKSTREAM (atomic; MKSTREAM creates an empty
    stream if needed). Creating and catching BUSYGROUP, rather than checking first, is what makes it
    safe when several workers start at once: a check cannot see a group another worker creates right
    after it. An existing group is left as it is: its position and its pending entries survive
    (destroying and re-creating it, or XGROUP SETID, would lose them).

    `start_id` matters only when the group is created: `"0"` delivers every entry already in the
    stream (a work queue filled before its first worker, a rebuild), `"$"` only entries added from
    now on (a new consumer of a long-lived stream, which must not replay years of history).

    Returns:
        True if this call created the group, False if it existed (the BUSYGROUP error is expected
        and swallowed; any other error is raised).
    """
    try:
        client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise
        return False
    return True


def append(client, stream: str, fields: Mapping[str, object], maxlen: int = 100_000) -> str:
    """Add an event and keep the stream near `maxlen` entries; returns the new entry's id.

    Commands: XADD <stream> MAXLEN ~ <maxlen> * field value ... (atomic). `~` lets the server trim
    only whole internal nodes, so the stream may hold somewhat more than `maxlen` entries; that
    makes trimming nearly free. Caveat: trimming deletes entries even if a group has not read or
    acknowledged them yet: size `maxlen` for the longest outage of your slowest consumer.
    """
    return client.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)


def process_new(client, stream: str, group: str, consumer: str, handler: Handler,
                count: int = 10, block_ms: int | None = 500) -> int:
    """Read up to `count` new entries for `consumer`; acknowledge, in one XACK, those whose `handler` returned.

    Commands: XREADGROUP GROUP <group> <consumer> COUNT <count> BLOCK <block_ms> STREAMS <stream> >,
    then one XACK <stream> <group> <id> ... for the handled entries of the batch: two round trips
    per batch, whatever its size. If `handler` raises, that entry is left pending (unacknowledged)
    and the rest of the batch still runs; `recover` retries it later. If the worker dies before the
    XACK, every entry of its batch stays pending, the handled ones too, and is delivered again:
    at-least-once delivery, so effects must be idempotent (`apply_once`). Acknowledging each entry
    right after its handler would redeliver fewer after a crash, for one more round trip per entry.

    Timeouts: BLOCK bounds the wait on the server (`None`: do not block; 0 would wait forever). The
    client's socket timeout bounds every reply, this one included, and redis-py does not extend it
    for blocking commands: keep `block_ms` under it (`connect()`'s is `SOCKET_TIMEOUT`, 5 s), or the
    read fails with TimeoutError, and a retried XREADGROUP may already have delivered entries the
    timed-out attempt never returned: they stay pending until `recover` claims them.

    Returns:
        How many entries were handled and acknowledged.
    """
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    done = []
    for entry_id, fields in entries(reply):
        try:
            handler(entry_id, fields)
        except Exception:  # a failed entry stays pending for `recover`; the others go on
            continue
        done.append(entry_id)
    if done:
        client.xack(stream, group, *done)
    return len(done)


def wait_until_idle(client, stream: str, group: str, min_idle_ms: int, timeout: float = 5.0) -> int:
    """Wait (bounded) until every pending entry of `group` has been idle at least `min_idle_ms`.

    Commands: XPENDING <stream> <group> (summary) and XPENDING ... IDLE <min_idle_ms> - + <n>,
    polled. Returns how many entries are pending (0 at once if none are). Raises `TimedOut` after
    `timeout` seconds.
    """
    def all_idle() -> list[int]:  # [pending] once every pending entry is idle enough (a list: 0 is an answer)
        pending = client.xpending(stream, group)["pending"]
        if not pending:
            return [0]
        idle = client.xpending_range(stream, group, min="-", max="+", count=pending, idle=min_idle_ms)
        return [pending] if len(idle) == pending else []

    return wait_for(all_idle, timeout, f"{min_idle_ms} ms of idleness of the entries pending in {group}")[0]


@dataclass(frozen=True)
class Recovery:
    """What one `recover` call did: entries handled and acked, failed again, moved to the dead letters."""

    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0


def dead_letter(client, stream: str, group: str, dead_stream: str, entry: Entry, deliveries: int) -> bool:
    """Copy an entry to `dead_stream` (its fields + `original_id` and `deliveries`) and acknowledge it.

    Commands: one Lua script (`streams_dead_letter.lua`): TYPE <dead_stream> and XPENDING <stream>
    <group> <id> <id> 1 first, then XADD <dead_stream> * ... and XACK <stream> <group> <id>. Atomic:
    no other client runs between them. But a script, like MULTI, does not roll back: had the XACK
    run and the XADD failed (the dead-letter key holding another type), the entry would be acknowledged
    and copied nowhere, i.e. lost. So the script checks first, writes nothing if a check fails, and
    does the write that could fail (XADD) before the one that cannot (XACK). An entry no longer
    pending (another rescuer moved it) is left alone, so it is never dead-lettered twice.
    Cluster: both keys in one slot, hence a shared hash tag such as `{orders}`.

    Returns:
        True if moved now, False if the entry was not pending (nothing written).

    Raises:
        ResponseError: `dead_stream` is not a stream, or the group does not exist (nothing written).
    """
    entry_id, fields = entry
    pairs = [item for field_value in fields.items() for item in field_value]
    script = lua.register(client, "streams_dead_letter")
    return bool(script(keys=[stream, dead_stream], args=[group, entry_id, deliveries, *pairs]))


def recover(client, stream: str, group: str, consumer: str, handler: Handler, dead_stream: str,
            min_idle_ms: int = 60_000, max_deliveries: int = 3, count: int = 100) -> Recovery:
    """Take over entries pending longer than `min_idle_ms` (their worker presumably died) and retry them.

    Commands, per page of at most `count` entries: XAUTOCLAIM <stream> <group> <consumer>
    <min_idle_ms> <cursor> COUNT <count> (atomic: an entry moves to `consumer` and its delivery
    count goes up by one), XPENDING <stream> <group> <id> <id> 1 per claimed entry for its delivery
    count (one pipeline), then per entry either the handler and XACK, or, once the entry has been
    delivered more than `max_deliveries` times, `dead_letter`. XAUTOCLAIM returns a cursor with each
    page: the next page starts there, until the cursor is 0-0. Starting over at 0-0 instead would
    claim again the entries that just failed (with min idle 0 they qualify at once) and never reach
    the ones after them. An entry that fails again stays pending, to be claimed by a later call:
    call it periodically. `min_idle_ms` must exceed the longest normal processing time, or a live but
    slow worker's entries are taken from it and processed twice.
    """
    processed = failed = dead = 0
    cursor = "0-0"
    while True:
        cursor, claimed, *_ = client.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms,
                                                start_id=cursor, count=count)
        claimed = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        with client.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
            deliveries = {item["message_id"]: item["times_delivered"] for reply in pipe.execute() for item in reply}
        for entry_id, fields in claimed:
            times = deliveries.get(entry_id, 1)
            if times > max_deliveries:
                dead += dead_letter(client, stream, group, dead_stream, (entry_id, fields), times)
                continue
            try:
                handler(entry_id, fields)
            except Exception:  # stays pending, with its delivery count, for the next recovery
                failed += 1
                continue
            client.xack(stream, group, entry_id)
            processed += 1
        if cursor == "0-0":
            return Recovery(processed, failed, dead)


def apply_once(client, seen: str, total: str, entry_id: str, cents: int) -> bool:
    """Add `cents` to `total` unless entry `entry_id` was applied before: idempotent processing.

    Commands: one Lua script (`streams_apply_once.lua`): SISMEMBER <seen> <id>; if absent, INCRBY
    <total> <cents>, then SADD <seen> <id>. Atomic, and ordered because a script does not roll back:
    INCRBY, which refuses a total or an amount that is not an integer, is the first write, and SADD
    after it cannot fail (SISMEMBER already checked the set's type). So an id is never marked
    without its effect, nor an effect applied without its id. Delivery is at-least-once (a worker
    that dies after the work but before XACK gets its entry redelivered), so effects must be
    idempotent.

    Money is counted in integer cents: INCRBY is exact, while floats cannot hold most decimal
    amounts (0.1 + 0.2 != 0.3 in Python) and INCRBYFLOAT's result depends on the precision of the
    server platform's long double, printed with 17 digits after the decimal point.

    Cluster: both keys need one hash tag. Production: the `seen` set grows with every entry; expire
    it or prune ids older than what the stream still holds.

    Returns:
        True if applied now, False for a duplicate.

    Raises:
        TypeError: `cents` is not an int (a float amount is refused before anything is sent).
        ResponseError: `total` holds something other than an integer (nothing written).
    """
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"amounts are integer cents, got {cents!r}")
    return bool(lua.register(client, "streams_apply_once")(keys=[seen, total], args=[entry_id, cents]))


def process_own_pending(client, stream: str, group: str, consumer: str, handler: Handler, count: int = 10) -> int:
    """On a worker's start: handle the entries this consumer took before it stopped and never acknowledged.

    Commands: XREADGROUP GROUP <group> <consumer> COUNT <count> STREAMS <stream> <id>, first with id
    0, then from the last id of each batch, until a batch comes back empty; one XACK per batch for
    the handled entries. With an id instead of `>`, XREADGROUP returns the consumer's *own* pending
    entries after that id (its history): it never blocks, delivers nothing new, and counts one more
    delivery for each entry. Then call `process_new` (`>`) for the new ones: the standard start of a
    worker that keeps its name across restarts, so nothing it held waits for `recover`'s idle time.

    An entry whose handler raises stays pending and the reading moves past it (reading from 0 again
    would return it forever). An entry deleted or trimmed while pending comes back without fields:
    it is acknowledged, as nothing is left to do. Not atomic across batches: another consumer's
    XAUTOCLAIM may take an entry in between, and then it is no longer in this history.

    Returns:
        How many entries were handled and acknowledged (deleted ones not counted).
    """
    handled, last_id = 0, "0"
    while batch := entries(client.xreadgroup(group, consumer, {stream: last_id}, count=count), keep_deleted=True):
        done = []
        for entry_id, fields in batch:
            if not fields:  # deleted while pending
                done.append(entry_id)
                continue
            try:
                handler(entry_id, fields)
            except Exception:  # stays pending, for `recover`
                continue
            done.append(entry_id)
            handled += 1
        if done:
            client.xack(stream, group, *done)
        last_id = batch[-1][0]
    return handled


def group_lag(client, stream: str, group: str) -> dict:
    """How far behind `group` is: XINFO GROUPS <stream>, the group's row.

    `pending` counts entries delivered to a consumer and not acknowledged yet; `lag` (Redis 7.0+)
    counts entries in the stream not delivered to the group at all, and `entries-read` how many it
    was delivered so far (the two add up to every entry ever added, minus those deleted before it
    read them). The work left is `lag + pending`. One command, a consistent snapshot.

    Caveat: `lag` is None (nil) when the server cannot compute it cheaply, e.g. after an entry not
    yet delivered to the group was deleted (XDEL): count the undelivered entries with XRANGE from
    `last-delivered-id` then, or wait until the group has read past the hole.

    Returns:
        {"consumers", "pending", "last-delivered-id", "entries-read", "lag"} of the group.

    Raises:
        KeyError: no group of that name on the stream.
    """
    for info in client.xinfo_groups(stream):
        if info["name"] == group:
            return {name: info[name] for name in ("consumers", "pending", "last-delivered-id", "entries-read", "lag")}
    raise KeyError(f"no consumer group {group!r} on {stream}")


def remove_idle_consumers(client, stream: str, group: str, min_idle_ms: int) -> list[str]:
    """Delete the consumers of `group` idle at least `min_idle_ms` ms that hold no pending entry.

    Commands: one Lua script (`streams_remove_idle_consumers.lua`): XINFO CONSUMERS <stream> <group>,
    then XGROUP DELCONSUMER <stream> <group> <name> for each consumer that qualifies. Atomic: no
    consumer can read between the check and its removal (in two client calls, a worker could take
    entries right after the check). A consumer is created by its first XREADGROUP and stays forever
    otherwise, so workers named per process or per pod pile up in XINFO CONSUMERS.

    Why never a consumer with pending entries: XGROUP DELCONSUMER drops its pending entries from the
    group's list (it returns how many), so no XPENDING shows them and no XAUTOCLAIM can find them:
    they were delivered and will never be processed. Claim them first (`recover`), then remove it.

    Returns:
        The names of the consumers removed.
    """
    return list(lua.register(client, "streams_remove_idle_consumers")(keys=[stream], args=[group, min_idle_ms]))


class Uncertain(Exception):
    """An earlier delivery of this entry started its effect and never recorded the outcome: it may or may not have happened."""


def idempotent(client, marks: str, effect: Callable[[dict[str, str]], object], ttl_s: int = 7 * 86_400) -> Handler:
    """A handler for `process_new`/`recover` that runs `effect(fields)` (an e-mail, a call to a bank) at most once per entry.

    Commands, per entry: SET <marks>:<id> started NX EX <ttl_s> before the effect (only the first
    delivery gets it), then SET <marks>:<id> done XX KEEPTTL after it; the caller's XACK comes
    last. A later delivery of the same entry (the worker died before XACK) finds the mark:
    - "done": the effect happened, the handler returns at once and the entry is acknowledged;
    - "started": a delivery died between starting the effect and recording it. Whether the e-mail
      left cannot be known from here, so the handler raises `Uncertain` instead of sending again:
      the entry stays pending, and `recover` moves it to the dead letters after `max_deliveries`,
      for a human (or the mail provider's log) to decide. Never twice, and never silently lost.

    Each SET is atomic; the whole is not and cannot be: an effect outside Redis cannot join a Redis
    transaction. Where the other system accepts an idempotency key (many payment and mail APIs
    do), pass it the entry id as well: then it can deduplicate the "started" case itself. The
    outbox is the other side of the same idea: the producer writes the intent (XADD) in the same
    atomic step as its own state, and only this handler talks to the outside world.
    Cluster: each mark is its own key. `ttl_s` must outlast the longest possible redelivery.
    """
    def handle(entry_id: str, fields: dict[str, str]) -> None:
        mark = f"{marks}:{entry_id}"
        if client.set(mark, "started", nx=True, ex=ttl_s):
            effect(fields)
            client.set(mark, "done", xx=True, keepttl=True)
        elif client.get(mark) != "done":
            raise Uncertain(f"entry {entry_id}: its effect was started by an earlier delivery and never confirmed")

    return handle
