"""Reliable event processing with Redis Streams: consumer groups, acknowledgements, crash recovery.

A stream is an append-only log of entries (an id `<ms>-<seq>` and a flat field map). A consumer
group hands each new entry to exactly one of its consumers and remembers it as *pending* for that
consumer until it is acknowledged (XACK). These patterns add what the guide leaves out:
creating a group twice without an error (`ensure_group`), acknowledging only after the work is
done (`process_new`), taking over the entries a dead worker left pending and moving an entry that
keeps failing to a dead-letter stream (`recover`), applying an entry's effect at most once although
it may be delivered more than once (`apply_once`), and keeping the log bounded (`append`).

Keys written (the caller chooses the names; the chapter uses a `{orders}` hash tag so that a stream,
its dead-letter stream and its bookkeeping share one cluster slot):
- `<stream>`: stream, the events; its consumer groups live inside the same key;
- `<dead stream>`: stream, entries given up on, fields + `original_id` + `deliveries`;
- `<seen>`: set of stream ids whose effect was applied (`apply_once`);
- `<total>`: string holding a number, the effect `apply_once` applies.

Cluster caveat: a stream is one key, so it lives on one shard and all its groups' traffic goes to
that shard's primary; spread load over several streams (e.g. one per tenant or per partition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from redis.exceptions import ResponseError

from course_lib import lua
from course_lib.servers import wait_for

Entry = tuple[str, dict[str, str]]  # (stream id, fields)
Handler = Callable[[str, dict[str, str]], object]


def entries(reply) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply for one stream, as a list of (id, fields).

    redis-py returns `{stream: [[entries]]}` under RESP3 and `[[stream, [entries]]]` under RESP2;
    both become one flat list. An entry deleted (trimmed) while pending comes back with no fields
    (None): it is skipped.
    """
    if not reply:
        return []
    groups = reply.values() if isinstance(reply, dict) else [item[1] for item in reply]
    found: list[Entry] = []
    for group in groups:
        batch = group[0] if group and isinstance(group[0], list) else group
        found += [(entry_id, fields) for entry_id, fields in batch if fields is not None]
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
    """Read up to `count` new entries for `consumer` and acknowledge each one after `handler` returns.

    Commands: XREADGROUP GROUP <group> <consumer> COUNT <count> BLOCK <block_ms> STREAMS <stream> >
    then one XACK per handled entry. If `handler` raises, that entry is left pending (unacknowledged)
    and the rest of the batch still runs; `recover` retries it later. If the worker dies, every entry
    it had not acknowledged stays pending too: at-least-once delivery. Keep `block_ms` well under
    the client's socket timeout (5 s for `connect()`), or the client gives up first.

    Returns:
        How many entries were handled and acknowledged.
    """
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    done = 0
    for entry_id, fields in entries(reply):
        try:
            handler(entry_id, fields)
        except Exception:  # a failed entry stays pending for `recover`; the others go on
            continue
        client.xack(stream, group, entry_id)
        done += 1
    return done


def wait_until_idle(client, stream: str, group: str, min_idle_ms: int, timeout: float = 5.0) -> int:
    """Wait (bounded) until every pending entry of `group` has been idle at least `min_idle_ms`.

    Commands: XPENDING <stream> <group> (summary) and XPENDING ... IDLE <min_idle_ms> - + <n>,
    polled. Returns how many entries are pending (0 at once if none are). Raises `ServerError` after
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


def dead_letter(client, stream: str, group: str, dead_stream: str, entry: Entry, deliveries: int) -> None:
    """Copy an entry to `dead_stream` (with `original_id` and `deliveries`) and acknowledge it.

    Commands: MULTI, XADD <dead_stream> * ..., XACK <stream> <group> <id>, EXEC: both or neither.
    Cluster: a transaction needs both keys in one slot, hence a shared hash tag such as `{orders}`.
    """
    entry_id, fields = entry
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(dead_stream, {**fields, "original_id": entry_id, "deliveries": deliveries})
        pipe.xack(stream, group, entry_id)
        pipe.execute()


def recover(client, stream: str, group: str, consumer: str, handler: Handler, dead_stream: str,
            min_idle_ms: int = 60_000, max_deliveries: int = 3, count: int = 100) -> Recovery:
    """Take over entries pending longer than `min_idle_ms` (their worker presumably died) and retry them.

    Commands: XAUTOCLAIM <stream> <group> <consumer> <min_idle_ms> 0-0 COUNT <count> (atomic: an
    entry moves to `consumer` and its delivery count goes up by one), XPENDING <stream> <group>
    <id> <id> 1 per claimed entry for its delivery count (one pipeline), then per entry either the
    handler and XACK, or, once the entry has been delivered more than `max_deliveries` times,
    `dead_letter`. An entry that
    fails again stays pending, to be claimed again later. One call claims at most `count` entries:
    call it periodically. `min_idle_ms` must exceed the longest normal processing time, or a live
    but slow worker's entries are taken from it and processed twice.
    """
    _, claimed, *_ = client.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms,
                                       start_id="0-0", count=count)
    claimed = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
    if not claimed:
        return Recovery()
    with client.pipeline(transaction=False) as pipe:
        for entry_id, _ in claimed:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        deliveries = {item["message_id"]: item["times_delivered"] for reply in pipe.execute() for item in reply}
    processed = failed = dead = 0
    for entry_id, fields in claimed:
        times = deliveries.get(entry_id, 1)
        if times > max_deliveries:
            dead_letter(client, stream, group, dead_stream, (entry_id, fields), times)
            dead += 1
            continue
        try:
            handler(entry_id, fields)
        except Exception:  # stays pending, with its delivery count, for the next recovery
            failed += 1
            continue
        client.xack(stream, group, entry_id)
        processed += 1
    return Recovery(processed, failed, dead)


def apply_once(client, seen: str, total: str, entry_id: str, amount: float) -> bool:
    """Add `amount` to `total` unless entry `entry_id` was applied before: idempotent processing.

    Commands: one Lua script (SADD <seen> <id>, and only if it added: INCRBYFLOAT <total> <amount>),
    so marking and applying happen together or not at all. Delivery is at-least-once (a worker that
    dies after the work but before XACK gets its entry redelivered), so effects must be idempotent.
    Cluster: both keys need one hash tag. Production: the `seen` set grows with every entry; expire
    it or prune ids older than what the stream still holds.

    Returns:
        True if applied now, False for a duplicate.
    """
    return bool(lua.register(client, "streams_apply_once")(keys=[seen, total], args=[entry_id, amount]))
