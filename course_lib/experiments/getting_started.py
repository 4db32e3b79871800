"""Chapter 00's experiment: where the time of a command goes. Keys written: none (it sends PING only)."""

from __future__ import annotations


import pandas as pd

from course_lib.measure import take_turns


def _pipelined_pings(client, commands: int) -> None:
    with client.pipeline(transaction=False) as pipe:
        for _ in range(commands):
            pipe.ping()
        pipe.execute()


def run_ping_round_trips(client, commands: int = 100, rounds: int = 30) -> pd.DataFrame:
    """`commands` PINGs sent two ways, taking turns `rounds` times: one per round trip, and all in one pipeline.

    PING does no work on the server, so what a PING costs alone and what it costs among many in
    one round trip (the client packing and parsing it) differ by the trip itself. Taking turns
    spreads a moment of load from another program over both ways alike.

    Returns one row per way, indexed by way ("one per round trip", "<commands> per round trip"):
    round_trips, per_command_us (of its quickest turn, see `measure.take_turns`), vs_batched (per_command_us divided by the
    batched way's).
    """
    ways = {
        "one per round trip": (commands, lambda: [client.ping() for _ in range(commands)]),
        f"{commands} per round trip": (1, lambda: _pipelined_pings(client, commands)),
    }
    quickest = take_turns({way: run for way, (_, run) in ways.items()}, rounds)
    per_command = {way: quickest[way] / commands * 1e6 for way in ways}
    batched = per_command[f"{commands} per round trip"]
    return pd.DataFrame([{"way": way, "round_trips": trips, "per_command_us": round(per_command[way], 2),
                          "vs_batched": round(per_command[way] / batched, 1)}
                         for way, (trips, _) in ways.items()]).set_index("way")
