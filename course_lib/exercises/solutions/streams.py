"""Reference solutions to chapter 04's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

from redis.exceptions import ResponseError


def ensure_group(client, stream, group, start):
    """XGROUP CREATE ... <start> MKSTREAM; a BUSYGROUP error means the group already exists (left as it is),
    anything else is raised."""
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as error:
        if not str(error).startswith("BUSYGROUP"):
            raise


def ack_after_processing(client, stream, group, consumer, handler):
    """XREADGROUP ... BLOCK 500 ... >, then per entry: the handler, and XACK only if it returned."""
    reply = client.xreadgroup(group, consumer, {stream: ">"}, count=10, block=500)
    handled = 0
    for _, batch in (reply or {}).items():
        for entry_id, fields in batch[0]:
            try:
                handler(fields)
            except Exception:
                continue
            client.xack(stream, group, entry_id)
            handled += 1
    return handled


def claim_or_dead_letter(client, stream, group, consumer, dead_stream, max_deliveries, handler):
    """XAUTOCLAIM page by page from the cursor; per entry its delivery count (XPENDING), then handle and XACK,
    or XADD to the dead letters and XACK in one MULTI/EXEC."""
    cursor = "0-0"
    while True:
        cursor, claimed, *_ = client.xautoclaim(stream, group, consumer, min_idle_time=0, start_id=cursor, count=100)
        for entry_id, fields in claimed:
            (info,) = client.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
            if info["times_delivered"] > max_deliveries:
                with client.pipeline(transaction=True) as pipe:
                    pipe.xadd(dead_stream, fields)
                    pipe.xack(stream, group, entry_id)
                    pipe.execute()
                continue
            try:
                handler(fields)
            except Exception:  # stays pending for a later call
                continue
            client.xack(stream, group, entry_id)
        if cursor == "0-0":
            return
