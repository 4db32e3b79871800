"""Chapter 08's experiments: the race (`run_race`), contention and speed (`run_contention`) and its widget.

Keys written (all under `course:transactions:`, each run deletes what it wrote before and after):
- `{account:race-<unwatched|watch|lua>-<n>}:balance|spent`: `run_race`'s accounts, one per contender and round;
- `{account:contention-<watch|lua>}:balance|spent`: `run_contention`'s account.

`run_restart` and `run_busy_script` write only on private scratch servers, stopped when they return.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pandas as pd
import redis

from course_lib import lua
from course_lib.cluster import restart_node
from course_lib.concurrency import run_together, wait_for
from course_lib.keys import delete_prefix, key
from course_lib.pipelines import RoundTripCounter
from course_lib.servers import Server, ServerBinary, find_binary, pid_alive, scratch_server
from course_lib.transactions import (LIBRARY, TooMuchContention, account_key, deduct, deduct_lua, load_library,
                                     open_account, total, transfer_lua, unwatched_deduct)

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


def restart(server: Server, binary: ServerBinary, save: bool = True) -> None:
    """Shut a scratch server down (SHUTDOWN SAVE, or NOSAVE) and start it again from its folder, same port.

    With `save`, the server writes its data (functions included) to `dump.rdb` first and loads it
    again on start; without, it comes back empty, as a server without persistence does after a crash.
    `server.pid` is updated, so whoever stops `server` stops the new process.
    """
    with server.client() as client:
        client.shutdown(save=save, nosave=not save)
    wait_for(lambda: not pid_alive(server.pid), 10, f"server pid {server.pid} to exit")
    server.pid = restart_node(binary, server).pid


def _library_listed(client) -> bool:
    return bool(client.function_list(library=LIBRARY))  # FUNCTION LIST LIBRARYNAME: the matching libraries


def _what_the_server_has(client, sha: str, alice: str, bob: str) -> dict:
    """Library listed? script cached? a raw EVALSHA of the transfer; `transfer_lua`'s commands; the total."""
    listed, cached = _library_listed(client), bool(client.script_exists(sha)[0])
    try:
        client.evalsha(sha, 2, alice, bob, 10)
        evalsha = "ran"
    except redis.exceptions.NoScriptError as error:
        evalsha = str(error).split(".")[0]  # the engines word the rest differently
    counter = RoundTripCounter(client)
    transfer_lua(counter.client, alice, bob, 10)
    sent = ", ".join(f"{name} x{n}" for name, n in sorted(counter.commands.items()))
    counter.close()
    return {"library_listed": listed, "script_cached": cached, "evalsha": evalsha, "transfer_lua_sent": sent,
            "balances": client.mget(alice, bob), "total": total(client, alice, bob) if listed else None}


def run_restart(save: bool = True, binary: ServerBinary | None = None) -> pd.DataFrame:
    """What a restart keeps: a function library against a script in the script cache, on a scratch server.

    Opens two balances (50 and 0), loads the library (`load_library`) and runs `transfer_lua` once
    (so the script is cached), then looks at the server before and after `restart(save=save)`: is
    the library listed (FUNCTION LIST), is the script cached (SCRIPT EXISTS), what a raw EVALSHA of
    it answers, which commands one `transfer_lua` sends (counted by a `RoundTripCounter`: after a
    NOSCRIPT reply redis-py's `Script` sends SCRIPT LOAD and EVALSHA again), the balances, and
    their total by FCALL_RO (None without the library). Each look moves 10 twice (EVALSHA, transfer_lua).

    Returns rows: moment, library_listed, script_cached, evalsha, transfer_lua_sent, balances, total;
    `.attrs["server_pid"]` is the scratch server's last process, stopped on return.
    """
    binary = binary or find_binary()
    alice, bob = key("transactions", "{bank:1}", "alice"), key("transactions", "{bank:1}", "bob")
    with scratch_server(binary=binary) as server, server.client() as client:
        client.mset({alice: 50, bob: 0})
        load_library(client)
        transfer_lua(client, alice, bob, 10)
        sha = lua.register(client, "transactions_transfer").sha
        before = {"moment": "before restart", **_what_the_server_has(client, sha, alice, bob)}
        restart(server, binary, save)
        client.connection_pool.disconnect()  # its connection died with the old process: open a new one
        after = {"moment": "after restart" if save else "after restart, not saved",
                 **_what_the_server_has(client, sha, alice, bob)}
    frame = pd.DataFrame([before, after], dtype=object)  # object: a missing total stays None, not NaN
    frame.attrs["server_pid"] = server.pid  # stopped by now: a test checks it
    return frame


def restart_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_restart` tests: the library survived a restart, the script cache did not, and
    redis-py's `Script` recovered from NOSCRIPT by itself (SCRIPT LOAD, then EVALSHA again)."""
    before, after = frame.iloc[0], frame.iloc[1]
    return {
        "the function library survived the restart": bool(before["library_listed"] and after["library_listed"]),
        "the script cache did not: EVALSHA got NOSCRIPT": bool(before["script_cached"] and not after["script_cached"]
                                                             and after["evalsha"] == "No matching script"),
        "redis-py's Script reloaded it by itself (SCRIPT LOAD, EVALSHA again)":
            after["transfer_lua_sent"] == "EVALSHA x2, SCRIPT LOAD x1",
    }


def _error_code(error: Exception) -> str:
    """An error reply's first word (BUSY, UNKILLABLE): the engines word the rest differently."""
    return str(error).split()[0]


def run_busy_script(passes: int = 2_000_000_000, write: bool = False, busy_ms: int = 200,
                    binary: ServerBinary | None = None, timeout: float = 60) -> pd.DataFrame:
    """A long script on a scratch server: another client's PING during it, then SCRIPT KILL.

    The server's `busy-reply-threshold` is `busy_ms` (default 5,000 ms): until a script has run that
    long the server answers nobody; after, it answers every other client's command with a BUSY error,
    except SCRIPT KILL and SHUTDOWN NOSAVE. One client runs `transactions_busy.lua` for `passes` loop
    passes (the default takes many seconds; with `write`, it SETs a key first); another PINGs until
    a PING is answered BUSY or the script ended, then sends SCRIPT KILL. A script that has written
    cannot be killed (UNKILLABLE: stopping it halfway would leave half its writes), so then SHUTDOWN
    NOSAVE stops the server and everything since its last save is lost. Every wait is bounded by
    `timeout` seconds; the server is stopped on return.

    Returns rows: step, reply, ms (the longest PING wait, for the PING row only);
    `.attrs["server_pid"]` is the scratch server's process, stopped on return.
    """
    binary = binary or find_binary()
    written = key("transactions", "busy", "written")
    with scratch_server({"busy-reply-threshold": str(busy_ms)}, binary=binary) as server:
        runner, other = server.client(socket_timeout=timeout), server.client()
        busy = lua.register(runner, "transactions_busy")
        outcome: dict[str, str] = {}

        def run_script() -> None:
            try:
                busy(keys=[written] if write else [], args=[passes])
                outcome["reply"] = "returned"
            except redis.ResponseError as error:
                outcome["reply"] = str(error).split(".")[0]
            except redis.ConnectionError:
                outcome["reply"] = "connection closed"

        script = threading.Thread(target=run_script, daemon=True)
        script.start()
        waited, reply = 0.0, "PONG"
        deadline = time.monotonic() + timeout
        while script.is_alive() and reply != "BUSY" and time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                other.ping()  # before the script starts: PONG at once; during it: held, then BUSY
            except redis.ResponseError as error:
                reply = _error_code(error)
            waited = max(waited, time.perf_counter() - start)
        steps = [{"step": "another client's PING during the script", "reply": reply, "ms": round(waited * 1000)}]
        if reply == "BUSY":
            try:
                other.script_kill()
                steps.append({"step": "SCRIPT KILL", "reply": "OK"})
            except redis.ResponseError as error:
                steps.append({"step": "SCRIPT KILL", "reply": _error_code(error)})
                other.shutdown(nosave=True)  # the one way out left: the server exits, unsaved writes are lost
                wait_for(lambda: not pid_alive(server.pid), 10, "the server to exit")
                steps.append({"step": "SHUTDOWN NOSAVE", "reply": "server stopped"})
        script.join(timeout)
        steps.append({"step": "the script's caller got", "reply": outcome.get("reply", "no reply yet")})
        if pid_alive(server.pid):
            steps.append({"step": "PING afterwards", "reply": "PONG" if other.ping() else "no answer"})
        runner.close()
        other.close()
    frame = pd.DataFrame(steps)
    frame.attrs["server_pid"] = server.pid  # stopped by now: a test checks it
    return frame


def busy_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_busy_script` tests: the script held another client's PING at least 100 ms
    (half the threshold) and then the server answered it BUSY; SCRIPT KILL ended the script and
    the server answered again."""
    replies = dict(zip(frame["step"], frame["reply"]))
    ping = frame.set_index("step").loc["another client's PING during the script"]
    return {
        "another client's PING waited at least 100 ms behind the script, then got BUSY":
            bool(ping["ms"] >= 100 and ping["reply"] == "BUSY"),
        "SCRIPT KILL ended the script and the server answered PING again":
            replies.get("SCRIPT KILL") == "OK" and replies.get("PING afterwards") == "PONG",
    }
