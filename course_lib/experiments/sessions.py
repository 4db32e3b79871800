"""Chapter 06's experiments: each `run_*` returns a DataFrame.

Keys written (all under `course:sessions:`, deleted again when each run ends):
- `race:json` (string holding JSON) and the `race` user's `SessionStore` session and index:
  `run_concurrent_updates`;
- `lost:json` (string holding JSON) and an anonymous store session: `run_lost_update`;
- `speed:json` (string holding JSON), `guide:<uuid>` and the `speed` user's store session: `run_read_cost`.
"""

from __future__ import annotations

import functools
import json
from typing import Callable

import pandas as pd

from course_lib.concurrency import run_together
from course_lib.exercises.adversary import Adversary
from course_lib.keys import key
from course_lib.measure import take_turns
from course_lib.pipelines import RoundTripCounter
from course_lib.sessions import (SessionStore, guide_create_session, guide_destroy_session, guide_extend_session,
                                 guide_get_session, load_json_session, save_json_session)

CHAPTER = "sessions"


def _update_json(client, session_key: str, name: str, value: str) -> None:
    """The JSON-string way to change one field: GET, change it in Python, SET the whole document back."""
    session = json.loads(client.get(session_key))
    session[name] = value
    client.set(session_key, json.dumps(session), keepttl=True)


def run_concurrent_updates(client, threads: int = 4, updates: int = 100) -> pd.DataFrame:
    """`threads` requests of one user at once, each writing its own field `updates` times.

    Once into a JSON string (GET, modify, SET: each write can put back another thread's stale
    field) and once through `SessionStore.update` (HSET of the one field, in a script).
    Returns one row per layout: layout, writes, fields_current (fields holding their thread's last
    value), stale_fields (fields left holding an older value: a write was undone).
    """
    store = SessionStore(client)
    json_key = key(CHAPTER, "race", "json")
    save_json_session(client, json_key, {"user": "race"}, 600)
    session_id = store.create("race")
    writers = {
        "JSON string (GET + SET)": lambda name, value: _update_json(client, json_key, name, value),
        "hash (SessionStore.update)": lambda name, value: store.update(session_id, {name: value}),
    }
    rows = []
    for layout, write in writers.items():
        def work(slot: int) -> None:
            for n in range(1, updates + 1):
                write(f"field{slot}", str(n))

        run_together(work, threads, timeout=60, what=f"session writers ({layout})")
        stored = (json.loads(client.get(json_key)) if layout.startswith("JSON")
                  else store.get(session_id).data)
        finals = [int(stored.get(f"field{slot}", 0)) for slot in range(threads)]
        rows.append({"layout": layout, "writes": threads * updates,
                     "fields_current": sum(value == updates for value in finals),
                     "stale_fields": threads - sum(value == updates for value in finals)})
    store.destroy_all("race")
    client.delete(json_key)
    return pd.DataFrame(rows)


def run_lost_update(client, interleave: bool = True) -> pd.DataFrame:
    """Request A adds to the cart while request B, on another app server, switches the theme; both
    layouts, deterministic: with `interleave`, B runs right after A's first command on the session
    (A's read), before A writes (the adversary of the exercises); without, B runs after A.

    Returns one row per layout: layout, changes (2), changes_kept (those the session holds after both).
    """
    store = SessionStore(client)
    json_key = key(CHAPTER, "lost", "json")
    start = {"cart": "tea", "theme": "dark"}
    rows = []
    for layout in ("JSON string (GET + SET)", "hash (SessionStore.update)"):
        save_json_session(client, json_key, start, 600)
        session_id = store.create(None, start)
        with Adversary(client) as adversary:
            if layout.startswith("JSON"):
                name = json_key
                request_a = lambda: _update_json(adversary.client, json_key, "cart", "tea,jam")  # noqa: E731
                request_b = lambda other: _update_json(other, json_key, "theme", "light")  # noqa: E731
            else:
                name = store.session_key(session_id)
                request_a = lambda: SessionStore(adversary.client).update(session_id, {"cart": "tea,jam"})  # noqa: E731
                request_b = lambda other: SessionStore(other).update(session_id, {"theme": "light"})  # noqa: E731
            if interleave:
                adversary.after(name, request_b)
            request_a()
            if not interleave:
                request_b(adversary.other)
        stored = json.loads(client.get(json_key)) if layout.startswith("JSON") else store.get(session_id).data
        rows.append({"layout": layout, "changes": 2,
                     "changes_kept": (stored["cart"] == "tea,jam") + (stored["theme"] == "light")})
        store.destroy(session_id)
    client.delete(json_key)
    return pd.DataFrame(rows)


def run_read_cost(client, samples: int = 1000, rounds: int = 40, extra_round_trip: tuple[str, ...] = ()) -> pd.DataFrame:
    """The cost of reading a session and restarting its idle timer, three ways, taking turns.

    - the guide: GET, then EXPIRE (two round trips);
    - a JSON string with GETEX (one command);
    - `SessionStore.get` (one script: deadline check, PEXPIRE, HGETALL).

    Args:
        extra_round_trip: reads to slow down with a plausible regression: a PING before each (one
            more round trip, e.g. an existence check first). For the verdict's degraded-setting test.

    Returns rows: read, round_trips (counted once, client side), median_us (of its quickest turn, see
    `measure.take_turns`).
    """
    store = SessionStore(client)
    guide_id = guide_create_session(client, "speed", {"cart": ["tea"]})
    json_key = key(CHAPTER, "speed", "json")
    save_json_session(client, json_key, {"user": "speed", "cart": ["tea"]}, 1800)
    session_id = store.create("speed", {"cart": "tea"})

    def reads(via) -> dict:
        """The three reads, each sent through `via`."""
        def guide_read() -> None:
            guide_get_session(via, guide_id)
            guide_extend_session(via, guide_id)

        via_store = SessionStore(via)
        plain = {"guide: GET + EXPIRE": guide_read,
                 "JSON string: GETEX": lambda: load_json_session(via, json_key, 1800),
                 "SessionStore.get (script)": lambda: via_store.get(session_id)}

        def slowed(read: Callable[[], object]) -> None:
            via.ping()
            read()

        return {name: functools.partial(slowed, read) if name in extra_round_trip else read
                for name, read in plain.items()}

    for read in reads(client).values():
        read()  # once first: the store's script is then loaded, so a counted read is one EVALSHA
    trips = {}
    for name in reads(client):
        counter = RoundTripCounter(client)
        reads(counter.client)[name]()
        trips[name] = counter.round_trips
        counter.close()
    quickest = take_turns(reads(client), rounds, calls=max(1, samples // rounds), warmup=5)
    guide_destroy_session(client, guide_id)
    client.delete(json_key)
    store.destroy_all("speed")
    return pd.DataFrame([{"read": name, "round_trips": trips[name],
                          "median_us": round(quickest[name] * 1e6, 1)} for name in trips])


def faster_by(cost: pd.DataFrame, fast: str, slow: str, factor: float) -> bool:
    """The verdict over `run_read_cost`'s table: the read `fast` takes at most 1/`factor` of `slow`'s median time.

    With GETEX given an extra round trip (`extra_round_trip`), both reads make two and the same
    verdict is False: it measures the round trip saved, not a constant.
    """
    median = cost.set_index("read")["median_us"]
    return bool(median[slow] >= factor * median[fast])
