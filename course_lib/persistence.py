"""Persistence and replication, measured: what survives when a server is killed.

Everything here runs on private servers the course starts for the purpose (`durable_server`,
`primary_and_replica`), never on the shared ones: they are killed with SIGKILL, started again from
their own folder, and stopped (and their folder deleted) when the `with` block ends.

- **RDB** (`rdb`, `snapshot`): BGSAVE forks the server; the child writes a point-in-time snapshot.
  What was written after the last snapshot is lost when the server dies.
- **AOF** (`aof`): every write command is appended to a file the server replays at start.
  `appendfsync` says when the server asks the kernel to put it on the disk: `always` (before the
  reply), `everysec` (a background fsync once a second) or `no` (whenever the kernel decides).
  In every policy the server normally hands the command to the kernel (write(2)) before it
  replies, so a **process** kill (SIGKILL, a crash) loses nothing the kernel has; only a power
  loss or a kernel crash loses what was not yet fsynced. (Exception: with `everysec`, while a
  background fsync is slow, the server postpones that write for up to 2 s and replies anyway.)
  This module kills processes; it cannot cut the power.
- **Replication** (`follow`, `cut_link`, `promote`): a replica copies the primary's writes
  asynchronously; a write the primary acknowledged may not have reached the replica when the
  primary dies. WAIT (`course_lib.cluster.incr_replicated`) tells the writer how many replicas have
  it; WAITAOF (`incr_on_disk`, Redis >= 7.2 and Valkey) how many have fsynced it.

Keys written, on the private servers only: `course:persistence:counter` (a string holding an
integer: the numbered writes, one INCR each) and whatever a caller writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import redis

from course_lib.concurrency import TimedOut, wait_for
from course_lib.keys import key
from course_lib.servers import (Server, ServerBinary, ServerError, find_binary, free_port, is_our_server, pid_alive,
                                port_is_free, scratch_server, server_args)

COUNTER = key("persistence", "counter")
POLICIES = ("always", "everysec", "no")


def aof(policy: str = "everysec", **settings: str) -> dict[str, str]:
    """Server settings for an append-only file with `appendfsync` `policy` (and any other `settings`)."""
    if policy not in POLICIES:
        raise ValueError(f"appendfsync is one of {POLICIES}, not {policy!r}")
    return {"appendonly": "yes", "appendfsync": policy, **settings}


def rdb(save: str = "", **settings: str) -> dict[str, str]:
    """Server settings for snapshots only (no AOF); `save` is the rule, e.g. "60 1000" (empty: BGSAVE by hand)."""
    return {"appendonly": "no", "save": save, **settings}


@dataclass
class DurableServer:
    """A private server that keeps its files: it can be killed and started again from its folder.

    `config` is the server's settings (`aof(...)`, `rdb(...)`); a restart uses them again, so a
    setting changed with CONFIG SET alone is gone after a restart, as on a server started without
    a config file.
    """

    binary: ServerBinary
    server: Server
    config: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def dir(self) -> Path:
        return Path(self.server.dir)

    def client(self, **kwargs) -> redis.Redis:
        """A client of this server: short timeouts, no retries (a kill must show, not be papered over)."""
        return self.server.client(**kwargs)

    def alive(self) -> bool:
        return self.server.alive()

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL the server process (by its pid, only if it is still ours) and wait until it is gone.

        Nothing of the server runs after the signal: no shutdown save, no last fsync. The kernel
        still holds what the server had written to files, as after any crash of a process.
        """
        if is_our_server(self.pid, self.port):
            os.kill(self.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(self.pid), timeout, f"server pid {self.pid} to die")

    def restart(self, timeout: float = 60) -> float:
        """Start the server again from its folder (same settings); return the seconds until it had loaded
        its data and answered.

        Same port, unless it is no longer free: a killed server's port is an ordinary ephemeral port,
        which another program's new connection may take meanwhile as its own end; then a new free
        port (`.port` and `.client()` follow it).

        Raises:
            ServerError: it exited instead (e.g. a damaged AOF with `aof-load-truncated no`; the
                message quotes its log).
            TimedOut: it had not loaded within `timeout` seconds.
        """
        if self.alive():
            raise ServerError(f"the server on port {self.port} is still running: kill or stop it first")
        pidfile, log = self.dir / "server.pid", self.dir / "server.log"
        pidfile.unlink(missing_ok=True)  # the killed process left its pid behind
        port = self.port if port_is_free(self.port) else free_port()  # a client's new connection may hold it now
        started = time.perf_counter()
        subprocess.run(server_args(self.binary, port, self.dir, None, self.config), check=True,
                       capture_output=True, timeout=30)

        def loaded() -> int | None:
            if not (pidfile.exists() and pidfile.read_text().strip()):
                return None
            pid = int(pidfile.read_text())
            if not pid_alive(pid):
                raise ServerError(f"the server on port {self.port} exited while starting; its log ends:\n"
                                  + "\n".join(log.read_text().splitlines()[-4:]))
            try:
                with Server(port=port, pid=pid, dir=str(self.dir)).client() as client:  # INFO answers while loading
                    return pid if client.info("persistence")["loading"] == 0 else None
            except (redis.RedisError, OSError):
                return None

        pid = wait_for(loaded, timeout, f"the server on port {port} to load its data")
        self.server = Server(port=port, pid=pid, dir=str(self.dir))
        return time.perf_counter() - started

    def stop(self) -> None:
        self.server.stop()


@contextlib.contextmanager
def durable_server(config: dict[str, str] | None = None, binary: ServerBinary | None = None) -> Iterator[DurableServer]:
    """A private server with these persistence settings, in a temporary folder of its own.

    On exit the server is stopped, whichever process it is after restarts, and the folder deleted.
    """
    binary = binary or find_binary()
    config = dict(config or {})
    with scratch_server(config=config, binary=binary) as first:
        durable = DurableServer(binary, first, config)
        try:
            yield durable
        finally:
            durable.stop()  # after a restart this is another process than `first`, which scratch_server stops


def snapshot(client: redis.Redis, timeout: float = 30) -> dict:
    """BGSAVE, and return INFO persistence once the snapshot is on disk (a bounded wait on `rdb_saves`).

    The fork's cost is in INFO: `latest_fork_usec` (stats: how long the server stood still to fork)
    and `rdb_last_cow_size` (bytes of memory copied because the parent wrote while the child saved).

    Raises:
        ServerError: the snapshot failed.
        TimedOut: it had not finished within `timeout` seconds.
    """
    saves = client.info("persistence")["rdb_saves"]
    client.bgsave()

    def done() -> dict | None:
        info = client.info("persistence")
        return info if info["rdb_saves"] > saves and not info["rdb_bgsave_in_progress"] else None

    info = wait_for(done, timeout, "BGSAVE to finish")
    if info["rdb_last_bgsave_status"] != "ok":
        raise ServerError(f"BGSAVE failed: {info['rdb_last_bgsave_status']}")
    return info


def rewrite_aof(client: redis.Redis, timeout: float = 30) -> dict:
    """BGREWRITEAOF, and return INFO persistence once the new base file is in place (bounded wait).

    Raises:
        ServerError: the rewrite failed.
        TimedOut: it had not finished within `timeout` seconds.
    """
    rewrites = client.info("persistence")["aof_rewrites"]
    client.bgrewriteaof()

    def done() -> dict | None:
        info = client.info("persistence")
        finished = info["aof_rewrites"] > rewrites and not info["aof_rewrite_in_progress"]
        return info if finished and not info["aof_rewrite_scheduled"] else None

    info = wait_for(done, timeout, "BGREWRITEAOF to finish")
    if info["aof_last_bgrewrite_status"] != "ok":
        raise ServerError(f"BGREWRITEAOF failed: {info['aof_last_bgrewrite_status']}")
    return info


def aof_files(server: DurableServer) -> dict[str, str]:
    """The multi-part AOF on disk (Redis >= 7): file name -> its type from the manifest.

    The folder is `appenddirname` (default `appendonlydir`); the manifest lists a base file (`b`,
    an RDB snapshot or commands, written by a rewrite) and the incremental files (`i`, the commands
    appended since); the server replays them in order at start.
    """
    folder = server.dir / server.client().config_get("appenddirname")["appenddirname"]
    manifest = next(folder.glob("*.manifest")).read_text().split()
    # Each line: file <name> seq <n> type <b|h|i>
    kinds = {"b": "base", "h": "history", "i": "incremental"}
    return {manifest[i + 1]: kinds[manifest[i + 5]] for i in range(0, len(manifest), 6)}


@dataclass(frozen=True)
class WriterOutcome:
    """What a writer of numbered writes saw: `acknowledged` replies, over `seconds`, and why it stopped."""

    acknowledged: int
    seconds: float
    error: str  # the exception that ended the stream: "ConnectionError" after a kill

    @property
    def rate(self) -> float:
        return self.acknowledged / self.seconds if self.seconds else 0.0


def write_until_killed(server: DurableServer, kill_after: float, key_name: str = COUNTER,
                       rate: float | None = None, timeout: float = 30) -> WriterOutcome:
    """INCR `key_name` one command at a time (no pipelining) until the server dies; kill it after `kill_after` s.

    Each reply is the write's sequence number, so the last reply is the number of acknowledged
    writes. A timer thread SIGKILLs the server while writes are in flight; the writer stops at the
    connection error. After a restart, `GET key_name` below the acknowledged count means writes
    the server had acknowledged were lost. `rate` (writes per second) paces the writer; None
    writes as fast as one connection can, one round trip per write.

    Raises:
        TimedOut: the server was still answering after `timeout` seconds.
    """
    killer = threading.Timer(kill_after, server.kill)
    acknowledged, error = 0, ""
    with server.client() as client:
        client.ping()  # connected before the clock starts
        start = time.perf_counter()
        killer.start()
        try:
            while time.perf_counter() - start < timeout:
                if rate:  # the next write is due at acknowledged / rate seconds after the start
                    time.sleep(max(0.0, start + acknowledged / rate - time.perf_counter()))
                acknowledged = client.incr(key_name)
        except (redis.ConnectionError, redis.TimeoutError) as stopped:
            error = type(stopped).__name__
        finally:
            killer.join(timeout)
    seconds = min(time.perf_counter() - start, kill_after)
    if not error:
        raise TimedOut(f"the server on port {server.port} still answered after {timeout} s")
    return WriterOutcome(int(acknowledged), seconds, error)


def surviving(client: redis.Redis, key_name: str = COUNTER) -> int:
    """How many numbered writes the (restarted) server has: the counter's value, 0 if it is missing."""
    return int(client.get(key_name) or 0)


# Replication -------------------------------------------------------------------------------------


@contextlib.contextmanager
def primary_and_replica(config: dict[str, str] | None = None,
                        binary: ServerBinary | None = None) -> Iterator[tuple[DurableServer, DurableServer]]:
    """Two private servers with the same settings, the second a replica of the first (linked, in sync)."""
    binary = binary or find_binary()
    with durable_server(config, binary) as primary, durable_server(config, binary) as replica:
        follow(replica, primary)
        yield primary, replica


def _replication(server: DurableServer) -> dict:
    with server.client() as client:
        return client.info("replication")


def in_sync(replica: DurableServer, primary: DurableServer) -> bool:
    """True when the replica's link is up and it has processed every byte the primary has sent."""
    mine, theirs = _replication(replica), _replication(primary)
    return mine.get("master_link_status") == "up" and mine["slave_repl_offset"] == theirs["master_repl_offset"]


def follow(replica: DurableServer, primary: DurableServer, timeout: float = 30) -> None:
    """REPLICAOF the primary, and return once the replica has synced, caught up, and acknowledges the stream.

    After a sync the primary may hold the stream back until the replica's first acknowledgement,
    which can take a second; so a PUBLISH (replicated, but leaving no key) followed by WAIT 1 on
    the same connection makes sure the writes that follow flow to the replica at once.

    Raises:
        TimedOut: it was not in sync, or had not acknowledged, within `timeout` seconds.
    """
    with replica.client() as client:
        client.replicaof("127.0.0.1", primary.port)
    wait_for(lambda: in_sync(replica, primary), timeout, f"the replica on port {replica.port} to catch up")
    with primary.client(socket_timeout=timeout + 2) as client, client.pipeline(transaction=False) as pipe:
        pipe.publish(key("persistence", "linked"), "")
        pipe.execute_command("WAIT", 1, int(timeout * 1000))
        if pipe.execute()[1] < 1:
            raise TimedOut(f"the replica on port {replica.port} did not acknowledge within {timeout:g} s")


def lag(primary: DurableServer, replica: DurableServer) -> int:
    """Bytes of replication stream the primary has produced that the replica has not processed."""
    return _replication(primary)["master_repl_offset"] - _replication(replica).get("slave_repl_offset", 0)


def cut_link(replica: DurableServer) -> None:
    """Break the replica's link to its primary, as a network failure between them would.

    REPLICAOF a loopback port where nothing listens: the replica drops its primary at once (the
    command returns after that), keeps its data, and retries the unreachable address in vain; the
    primary goes on accepting writes with no replica. Deterministic, unlike a real partition.
    """
    with replica.client() as client:
        client.replicaof("127.0.0.1", free_port())


def promote(replica: DurableServer) -> None:
    """REPLICAOF NO ONE: the replica becomes a primary with the data it has (a failover's last step)."""
    with replica.client() as client:
        client.replicaof("NO", "ONE")


def incr_on_disk(client: redis.Redis, key_name: str, local: int = 1, replicas: int = 1,
                 timeout_ms: int = 1000) -> tuple[int, int, int] | None:
    """INCR, then WAITAOF: wait until `local` (0 or 1) AOF fsyncs here and `replicas` replicas' fsyncs have it.

    Both commands in one pipeline, so on one connection: WAITAOF waits for that connection's last
    write. Needs `appendonly yes` (on the replicas too) and a server with WAITAOF (Redis >= 7.2,
    Valkey); returns None on a server without it (Redis 7.0 answers "unknown command"), with the
    INCR applied all the same.

    Returns:
        (the new value, local fsyncs, replica fsyncs that confirmed it within `timeout_ms`).
    """
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(key_name)
        pipe.execute_command("WAITAOF", local, replicas, timeout_ms)
        value, confirmed = pipe.execute(raise_on_error=False)
    if isinstance(confirmed, redis.ResponseError):
        if "unknown command" in str(confirmed).lower():
            return None
        raise confirmed
    return int(value), int(confirmed[0]), int(confirmed[1])


def cut_aof_tail(server: DurableServer, nbytes: int) -> str:
    """Cut the last `nbytes` bytes off the newest incremental AOF file, as a crash in the middle of a
    write (or a full disk) leaves it; returns the file's name. The server must not be running.

    At start, `aof-load-truncated yes` (the default) loads the file up to the last whole command,
    logs a warning and drops the incomplete one; `no` makes the server refuse to start.
    """
    if server.alive():
        raise ServerError("stop or kill the server before cutting its AOF")
    folder = server.dir / server.config.get("appenddirname", "appendonlydir")
    newest = max(folder.glob("*.incr.aof"), key=lambda path: int(path.name.split(".")[-3]))
    with newest.open("r+b") as handle:
        handle.truncate(max(0, newest.stat().st_size - nbytes))
    return newest.name
