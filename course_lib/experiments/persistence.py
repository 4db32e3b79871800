"""Chapter 10's experiments: servers killed with SIGKILL, started again, and what survived counted.

Every experiment starts its own private servers (`course_lib.persistence.durable_server`), which
are stopped and deleted when it returns; none touches the shared servers.

Keys written, on those private servers only: `course:persistence:counter` (a string holding an
integer, one INCR per numbered write), `course:persistence:counter:stream` (a stream, `run_stream_restart`)
and, for `run_restart_times`, DEBUG POPULATE's `key:<n>` strings.
"""

from __future__ import annotations

import time

import pandas as pd

from course_lib.cluster import incr_replicated
from course_lib.persistence import (COUNTER, POLICIES, aof, cut_link, durable_server, primary_and_replica, promote,
                                    rdb, rewrite_aof, snapshot, surviving, write_until_killed)
from course_lib.servers import ServerBinary, find_binary


def default_configs() -> dict[str, dict[str, str]]:
    """One AOF server per `appendfsync` policy: label -> settings."""
    return {policy: aof(policy) for policy in POLICIES}


def run_kill(config: dict[str, str], seconds: float, rate: float | None = None,
             binary: ServerBinary | None = None) -> dict:
    """One private server with `config`: numbered writes for `seconds`, SIGKILL mid-stream, restart, count.

    Returns acknowledged (replies the writer got), survived (the counter after the restart),
    lost (acknowledged writes missing), writes_per_s (acknowledged / seconds) and restart_s.
    """
    with durable_server(config, binary) as server:
        stream = write_until_killed(server, kill_after=seconds, rate=rate)
        restart_s = server.restart()
        with server.client() as client:
            survived = surviving(client)
    return {"acknowledged": stream.acknowledged, "survived": survived,
            "lost": max(0, stream.acknowledged - survived), "writes_per_s": round(stream.rate),
            "restart_s": round(restart_s, 3)}


def run_policies(configs: dict[str, dict[str, str]] | None = None, seconds: float = 2.5,
                 binary: ServerBinary | None = None) -> pd.DataFrame:
    """`run_kill` once per policy (label -> server settings; default: the three `appendfsync` policies).

    One writer, one INCR per round trip (no pipelining), so `appendfsync always` pays one fsync per
    write. Returns one row per label: policy, acknowledged, survived, lost, writes_per_s, restart_s.
    """
    binary = binary or find_binary()
    rows = [{"policy": label, **run_kill(config, seconds, binary=binary)}
            for label, config in (configs or default_configs()).items()]
    return pd.DataFrame(rows)


def policy_verdicts(policies: pd.DataFrame) -> dict[str, bool]:
    """The claims `run_policies` tests (rows labelled always, everysec and no).

    - always: nothing acknowledged is lost (the write and its fsync happen before the reply);
    - everysec: at most 2 s of writes lost, at the rate measured (Redis postpones a write for up to
      2 s while a slow background fsync runs; on a process kill it typically loses nothing);
    - no: nothing acknowledged lost on a process kill (the write reached the kernel before the reply);
    - always costs throughput: one fsync per unpipelined write, at least 2x slower than everysec.
    """
    rows = policies.set_index("policy")
    return {
        "appendfsync always lost no acknowledged write": bool(rows.loc["always", "lost"] == 0),
        "appendfsync everysec lost at most 2 s of writes at its measured rate":
            bool(rows.loc["everysec", "lost"] <= 2 * rows.loc["everysec", "writes_per_s"]),
        "appendfsync no lost no acknowledged write to a process kill (the kernel had them)":
            bool(rows.loc["no", "lost"] == 0),
        "appendfsync always is at least 2x slower than everysec (one fsync per write)":
            bool(2 * rows.loc["always", "writes_per_s"] <= rows.loc["everysec", "writes_per_s"]),
    }


def run_snapshot_loss(before: int = 1000, after: int = 500, config: dict[str, str] | None = None,
                      binary: ServerBinary | None = None) -> dict:
    """`before` writes, BGSAVE, `after` more acknowledged writes, SIGKILL, restart from the folder.

    With snapshots only (the default `rdb()`), exactly the `after` writes are lost. Returns
    acknowledged, snapshot_at (the counter when BGSAVE forked), survived, lost, and the fork's cost
    from INFO: fork_usec (`latest_fork_usec`) and cow_bytes (`rdb_last_cow_size`).
    """
    with durable_server(config or rdb(), binary) as server:
        with server.client() as client:
            with client.pipeline(transaction=False) as pipe:
                for _ in range(before):
                    pipe.incr(COUNTER)
                pipe.execute()
            info = snapshot(client)
            fork_usec = client.info("stats")["latest_fork_usec"]
            acknowledged = 0
            for _ in range(after):  # one round trip each: every reply is an acknowledgement
                acknowledged = client.incr(COUNTER)
        server.kill()
        server.restart()
        with server.client() as client:
            survived = surviving(client)
    return {"acknowledged": acknowledged, "snapshot_at": before, "survived": survived,
            "lost": acknowledged - survived, "fork_usec": fork_usec, "cow_bytes": info["rdb_last_cow_size"]}


def snapshot_verdicts(loss: dict, after: int = 500) -> dict[str, bool]:
    """What `run_snapshot_loss` shows: the restart has the snapshot, and exactly the writes after it are lost."""
    return {
        "the restarted server has exactly the snapshot": loss["survived"] == loss["snapshot_at"],
        f"exactly the {after} acknowledged writes after the snapshot were lost": loss["lost"] == after,
    }


def run_failover(confirmed: int = 10, unconfirmed: int = 5, cut: bool = True, replicas: int = 1,
                 timeout_ms: int = 200, config: dict[str, str] | None = None,
                 binary: ServerBinary | None = None) -> dict:
    """A primary and a replica; INCR + WAIT each write; the link cut half-way; the primary killed; the replica promoted.

    Both servers run `config` (default: AOF with `appendfsync everysec`, so that no one can blame
    the loss on a missing AOF).

    `confirmed` writes while the link is up, then (if `cut`) the replica's link is cut and
    `unconfirmed` more writes follow, each acknowledged by the primary; `WAIT replicas timeout_ms`
    after each says how many replicas have it. Then SIGKILL the primary and promote the replica.

    Returns acknowledged (by the primary), wait_confirmed (writes WAIT reported on `replicas`
    replicas; fewer than reached the replica when a starved replica acknowledges late), on_replica
    (the promoted replica's counter), lost (acknowledged, not on it) and confirmed_lost (confirmed
    by WAIT and lost all the same: 0 whenever WAIT asked for at least one replica).
    """
    with primary_and_replica(config or aof("everysec"), binary) as (primary, replica):
        with primary.client() as client:
            seen = []  # per write: (its number, replicas that had it when WAIT returned)
            for n in range(confirmed + unconfirmed):
                if n == confirmed and cut:
                    cut_link(replica)
                seen.append(incr_replicated(client, COUNTER, replicas=replicas, timeout_ms=timeout_ms))
        primary.kill()
        promote(replica)
        with replica.client() as client:
            on_replica = surviving(client)
    acknowledged = seen[-1][0]
    confirmed_writes = [value for value, acks in seen if acks >= replicas]
    return {"acknowledged": acknowledged, "wait_confirmed": len(confirmed_writes), "on_replica": on_replica,
            "lost": acknowledged - on_replica, "confirmed_lost": sum(value > on_replica for value in confirmed_writes)}


def failover_verdicts(failover: dict, unconfirmed: int = 5) -> dict[str, bool]:
    """What `run_failover` shows: the writes after the cut, acknowledged by the primary, were lost; WAIT
    had confirmed none of them."""
    return {
        f"the {unconfirmed} writes the primary acknowledged after the cut were lost when its replica took over":
            failover["lost"] == unconfirmed,
        "WAIT had confirmed none of the lost writes": failover["confirmed_lost"] == 0,
    }


def run_stream_restart(config: dict[str, str], entries: int = 100, binary: ServerBinary | None = None) -> dict:
    """XADD `entries` entries to a stream on a private server with `config`, SIGKILL it, restart, XLEN.

    Returns acknowledged (entries XADD answered with an id) and survived (XLEN after the restart).
    """
    stream = COUNTER + ":stream"
    with durable_server(config, binary) as server:
        with server.client() as client:
            acknowledged = sum(bool(client.xadd(stream, {"n": n})) for n in range(entries))
        server.kill()
        server.restart()
        with server.client() as client:
            survived = client.xlen(stream)
    return {"acknowledged": acknowledged, "survived": survived}


def stream_verdicts(without: dict, with_aof: dict) -> dict[str, bool]:
    """The guide calls Streams persistent: a stream is exactly as persistent as the server's settings."""
    return {
        "a stream on a server without persistence is gone after a kill": without["survived"] == 0 < without["acknowledged"],
        "the same stream on an AOF server kept every acknowledged entry": with_aof["survived"] == with_aof["acknowledged"],
    }


def _load_time(config: dict[str, str], keys: int, binary: ServerBinary, save, restarts: int) -> tuple[float, int]:
    """DEBUG POPULATE `keys` strings, persist them with `save(client)`, then `restarts` times SIGKILL and
    restart: (the quickest restart's seconds, bytes on disk)."""
    with durable_server(config, binary) as server:
        with server.client(socket_timeout=60) as client:
            client.execute_command("DEBUG", "POPULATE", keys)  # fast filler; not written to the AOF itself
            save(client)
        size = sum(path.stat().st_size for path in server.dir.rglob("*") if path.suffix in (".rdb", ".aof"))
        seconds = []
        for _ in range(restarts):  # the quickest of a few: a burst of load on a shared machine only slows one down
            server.kill()
            seconds.append(server.restart())
            with server.client() as client:
                if client.dbsize() != keys:
                    raise AssertionError(f"the restarted server has {client.dbsize()} keys, not {keys}")
    return min(seconds), size


def run_restart_times(sizes: tuple[int, ...] = (50_000, 200_000, 500_000), restarts: int = 3,
                      binary: ServerBinary | None = None) -> pd.DataFrame:
    """Seconds from start until the data is loaded, for an RDB file and for an AOF of commands, per size
    (the quickest of `restarts` restarts).

    RDB: SAVE writes the snapshot. AOF: BGREWRITEAOF with `aof-use-rdb-preamble no` writes the data
    as SET commands (the default, `yes`, writes an RDB inside the AOF and loads as fast as RDB).
    Returns one row per (format, keys): format, keys, mb_on_disk, restart_s.
    """
    binary = binary or find_binary()
    formats = {
        "RDB": (rdb(), lambda client: client.save()),
        "AOF (commands)": (aof("everysec", **{"aof-use-rdb-preamble": "no"}), rewrite_aof),
    }
    rows = []
    for label, (config, save) in formats.items():
        for keys in sizes:
            seconds, size = _load_time(config, keys, binary, save, restarts)
            rows.append({"format": label, "keys": keys, "mb_on_disk": round(size / 1e6, 1),
                         "restart_s": round(seconds, 3)})
    return pd.DataFrame(rows)


def restart_verdicts(times: pd.DataFrame) -> dict[str, bool]:
    """Restart time grows with the data, and an AOF of commands loads slower than RDB at the largest size."""
    table = times.pivot(index="keys", columns="format", values="restart_s")
    largest, smallest = table.index.max(), table.index.min()
    return {
        "restart time grows with the data (largest size at least 2x the smallest, both formats)":
            bool((table.loc[largest] >= 2 * table.loc[smallest]).all()),
        "at the largest size the AOF of commands takes longer to load than RDB":
            bool(table.loc[largest, "AOF (commands)"] > table.loc[largest, "RDB"]),
    }


def plot_restart_times(times: pd.DataFrame):
    """Restart seconds against keys, one line per format; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, rows in times.groupby("format"):
        ax.plot(rows["keys"], rows["restart_s"], marker="o", label=label)
    ax.set_xlabel("keys")
    ax.set_ylabel("seconds until loaded")
    ax.set_title("restart time vs dataset size")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def kill_widget():
    """Pick an `appendfsync` policy and a write rate, press Run: acknowledged vs survived after a SIGKILL."""
    import ipywidgets as widgets
    from IPython.display import display

    policy = widgets.Dropdown(options=[*POLICIES, "RDB only"], value="everysec", description="policy")
    rate = widgets.IntSlider(value=500, min=50, max=5000, step=50, description="writes/s")
    run = widgets.Button(description="Run", button_style="primary")
    status = widgets.Label(value="Choose a policy and a target rate, then press Run (2 s of writes, then SIGKILL).")
    output = widgets.Output()

    def on_run(_) -> None:
        status.value = "writing..."
        config = rdb() if policy.value == "RDB only" else aof(policy.value)
        started = time.perf_counter()
        result = run_kill(config, seconds=2.0, rate=rate.value)
        status.value = f"{policy.value}, target {rate.value} writes/s, done in {time.perf_counter() - started:.1f} s"
        output.clear_output(wait=True)
        with output:
            display(pd.DataFrame([{"policy": policy.value, **result}]))

    run.on_click(on_run)
    return widgets.VBox([widgets.HBox([policy, rate, run]), status, output])
