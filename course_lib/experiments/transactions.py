"""Chapter 08's experiments: the race (`run_race`), contention and speed (`run_contention`) and its widget.

Keys written (all under `course:transactions:`, each run deletes what it wrote before and after):
- `{account:race-<unwatched|watch|lua>-<n>}:balance|spent`: `run_race`'s accounts, one per contender and round;
- `{account:contention-<watch|lua>}:balance|spent`: `run_contention`'s account.
"""

from __future__ import annotations

import time
from typing import Callable

import pandas as pd

from course_lib.concurrency import run_together
from course_lib.keys import delete_prefix
from course_lib.transactions import (TooMuchContention, account_key, deduct, deduct_lua, open_account,
                                     unwatched_deduct)

UNWATCHED = "read-check-write, no WATCH"
WATCHED = "WATCH/MULTI/EXEC"
LUA = "Lua script"
SHORT = {UNWATCHED: "unwatched", WATCHED: "watch", LUA: "lua"}  # contender -> the account name's part


def _forget(client, start: str) -> None:
    delete_prefix(client, f"course:transactions:{{account:{start}")


def _contenders(client, retries: int) -> dict[str, Callable[[str, int], tuple[bool, int]]]:
    """contender -> deduct(account, amount) -> (deducted, retries)."""

    def watched(account: str, amount: int) -> tuple[bool, int]:
        result = deduct(client, account, amount, retries=retries)
        return result.ok, result.retries

    return {
        UNWATCHED: lambda account, amount: (unwatched_deduct(client, account, amount), 0),
        WATCHED: watched,
        LUA: lambda account, amount: (deduct_lua(client, account, amount).ok, 0),
    }


def run_race(client, rounds: int = 10, threads: int = 8, attempts: int = 2, balance: int = 5,
             retries: int = 10) -> pd.DataFrame:
    """`rounds` times, `threads` threads released at once each try `attempts` deductions of 1 from one
    account holding `balance` (fewer than the threads: they all read a balance that has room).

    A correct deduction ends every round at balance 0 with spent == `balance`. Returns one row per
    contender: contender, rounds, rounds_overdrawn (balance below 0), rounds_not_conserved
    (balance + spent != the opening balance), lowest_balance, retries (WatchErrors survived).
    """
    _forget(client, "race-")
    rows = []
    for contender, attempt in _contenders(client, retries).items():
        overdrawn = not_conserved = retried = 0
        lowest = balance
        for n in range(rounds):
            account = f"race-{SHORT[contender]}-{n}"
            open_account(client, account, balance)

            def work(_slot: int, account=account, attempt=attempt) -> int:
                return sum(attempt(account, 1)[1] for _ in range(attempts))

            retried += sum(run_together(work, threads, timeout=60, what="deduct race"))
            left = int(client.get(account_key(account, "balance")))
            spent = int(client.get(account_key(account, "spent")))
            overdrawn += left < 0
            not_conserved += left + spent != balance
            lowest = min(lowest, left)
        rows.append({"contender": contender, "rounds": rounds, "rounds_overdrawn": overdrawn,
                     "rounds_not_conserved": not_conserved, "lowest_balance": lowest, "retries": retried})
    _forget(client, "race-")
    return pd.DataFrame(rows)


def race_verdicts(race: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_race` tests: without WATCH the race shows; with WATCH it never does, and WATCH had to retry."""
    rows = race.set_index("contender")
    return {
        "the guide's read-check-write without WATCH overdraws or loses updates":
            bool(rows.loc[UNWATCHED, "rounds_overdrawn"] + rows.loc[UNWATCHED, "rounds_not_conserved"] > 0),
        "WATCH/MULTI never overdraws and the total balance is conserved":
            bool(rows.loc[WATCHED, ["rounds_overdrawn", "rounds_not_conserved"]].sum() == 0
                 and rows.loc[WATCHED, "lowest_balance"] == 0),
        "some transactions were retried": bool(rows.loc[WATCHED, "retries"] > 0),
    }


def run_contention(client, threads: int = 8, per_thread: int = 50, retries: int = 1000,
                   contenders: tuple[str, ...] = (WATCHED, LUA)) -> pd.DataFrame:
    """`threads` threads each deduct 1, `per_thread` times, from ONE account with room for all of it.

    The same work for every contender: threads x per_thread deductions. A WATCH deduction that
    exhausts its `retries` gives up (counted in `gave_up`, not retried again).

    Returns one row per contender: contender, threads, retries_allowed, asked (threads x per_thread),
    deducted, gave_up, retries (aborted attempts, those of the give-ups included), seconds,
    deductions_per_s, conserved (balance + spent == opening balance).
    """
    _forget(client, "contention-")
    attempts = _contenders(client, retries)
    opening = threads * per_thread
    rows = []
    for contender in contenders:
        account = f"contention-{SHORT[contender]}"
        open_account(client, account, opening)

        def work(_slot: int, account=account, attempt=attempts[contender]) -> tuple[int, int, int]:
            deducted = gave_up = retried = 0
            for _ in range(per_thread):
                try:
                    ok, extra = attempt(account, 1)
                except TooMuchContention:
                    gave_up += 1
                    retried += retries + 1
                    continue
                deducted += ok
                retried += extra
            return deducted, gave_up, retried

        start = time.perf_counter()
        outcomes = run_together(work, threads, timeout=120, what="contention")
        seconds = time.perf_counter() - start
        deducted, gave_up, retried = (sum(column) for column in zip(*outcomes))
        left = int(client.get(account_key(account, "balance")))
        spent = int(client.get(account_key(account, "spent")))
        rows.append({"contender": contender, "threads": threads, "retries_allowed": retries, "asked": opening,
                     "deducted": deducted,
                     "gave_up": gave_up, "retries": retried, "seconds": round(seconds, 3),
                     "deductions_per_s": round(deducted / seconds), "conserved": left + spent == opening})
    _forget(client, "contention-")
    return pd.DataFrame(rows)


def contention_verdicts(contention: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_contention` tests (its rows of one or more runs, WATCH and Lua).

    All the work done by both, with the balance conserved; WATCH paid for the contention with at
    least one aborted attempt per two deductions; and Lua did the same work at least 3x faster
    (without contention it is about 3x faster already: one round trip per deduction against WATCH's four).
    """
    totals = contention.groupby("contender")[["asked", "deducted", "retries", "seconds"]].sum()
    return {
        "both completed all the work and conserved the balance":
            bool((totals["deducted"] == totals["asked"]).all() and contention["conserved"].all()),
        "under contention WATCH aborted at least one attempt per two deductions":
            bool(totals.loc[WATCHED, "retries"] >= totals.loc[WATCHED, "deducted"] / 2),
        "Lua completes the same work at least 3x faster than WATCH retries":
            bool(totals.loc[WATCHED, "seconds"] >= 3 * totals.loc[LUA, "seconds"]),
    }


def contention_widget(client):
    """Pick threads and the retry budget, press Run: deductions, give-ups, retries and throughput."""
    import ipywidgets as widgets
    from IPython.display import display

    threads = widgets.IntSlider(value=8, min=1, max=16, description="threads")
    retries = widgets.IntSlider(value=3, min=0, max=20, description="retries")
    run = widgets.Button(description="Run", button_style="primary")
    status = widgets.Label(value="Choose threads and retries (WATCH attempts after the first), then press Run.")
    output = widgets.Output()

    def on_run(_) -> None:
        status.value = "running..."
        result = run_contention(client, threads.value, per_thread=50, retries=retries.value)
        status.value = f"{threads.value} threads x 50 deductions of 1 from one account, retries={retries.value}"
        output.clear_output(wait=True)
        with output:
            display(result)

    run.on_click(on_run)
    return widgets.VBox([widgets.HBox([threads, retries, run]), status, output])
