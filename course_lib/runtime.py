"""The embedded servers: one standalone server and one 6-node cluster (3 primaries + 3 replicas).

Everything lives in one runtime folder (`COURSE_RUNTIME_DIR`, default `<repo>/.runtime`):
`state.json` records engine, ports, pids and owners; each node has a folder with its pid file,
log and `nodes.conf`. All servers bind to 127.0.0.1 on ports chosen free at start.

Lifetime:
- `up()` with no owner (the `python -m course_lib up` command) leaves the servers running until
  `down()`.
- `up(owner=pid)` leases them to a process (JupyterLab via `lab`, a pytest session, a notebook
  kernel that started them on demand). `release(pid)` ends the lease, and the last release stops
  the servers. A watchdog process stops them too once every owner has died, so a crashed kernel
  or a killed `lab` never leaves servers behind.
- `up()` is idempotent: live servers are reused; a dead standalone server is replaced; a cluster
  with any dead node, or not in `cluster_state:ok`, is rebuilt (the embedded cluster holds only
  scratch data). A stale `state.json` (dead pids, a pid reused by another program, a port now
  taken by someone else) is recognised because every check asks the port which process answers.

Shared machines (a lab PC, a JupyterHub host): every local user can connect to 127.0.0.1, so
loopback alone does not keep them out. A new stack therefore gets a random
password (`secrets.token_urlsafe`, 256 bits), kept in `password` in the runtime folder (mode 0600)
and in each node's `auth.conf` (see `servers.start_server`); the stack's URLs carry it, so
`connect()`, `connect_cluster()`, the CLI and kernels (through `Stack.settings()`) use it. It keeps
out other local users; not root, nor anything running as you (which can read the file).
`COURSE_REQUIRE_PASSWORD=0` starts new stacks without one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import redis

from course_lib.concurrency import wait_for
from course_lib.seat import joined
from course_lib.servers import (Server, ServerBinary, ServerError, find_binary, pid_alive, probe_binary, reaped_if_killed,
                                start_server, write_secret)
from course_lib.settings import CLUSTER_URL_SETTING, PASSWORD_SETTING, REDIS_URL_SETTING, RUNTIME_DIR_SETTING

PASSWORD_FILE = "password"
SLOT_COUNT = 16384
PRIMARIES = 3
CLUSTER_READY_TIMEOUT = 30.0


def runtime_dir(path: str | os.PathLike | None = None) -> Path:
    """The runtime folder: the argument, else `COURSE_RUNTIME_DIR`, else `<repo>/.runtime`."""
    chosen = path or os.environ.get(RUNTIME_DIR_SETTING) or Path(__file__).resolve().parent.parent / ".runtime"
    folder = Path(chosen).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServerError(f"Cannot use runtime folder {folder} ({exc}). Set {RUNTIME_DIR_SETTING} to a writable folder.") from None
    return folder


@dataclass
class Stack:
    """What `state.json` records about the running servers."""

    engine: str
    binary: str
    standalone: Server
    cluster: list[Server]  # the first PRIMARIES were created as primaries, the rest as their replicas
    owners: list[int] | None = None  # None: kept until `down`; a list: leased to these pids
    watchdog: int | None = None
    folder: Path = field(default=Path("."), repr=False)
    password: str | None = field(default=None, repr=False)  # kept in its own 0600 file, never in state.json

    @property
    def _auth(self) -> str:
        return f":{self.password}@" if self.password else ""

    @property
    def redis_url(self) -> str:
        return f"redis://{self._auth}127.0.0.1:{self.standalone.port}/0"

    @property
    def cluster_url(self) -> str:
        return f"redis://{self._auth}127.0.0.1:{self.cluster[0].port}"

    def url(self, setting: str) -> str:
        """The URL this stack offers for `setting`: `REDIS_URL_SETTING` or `CLUSTER_URL_SETTING`."""
        return {REDIS_URL_SETTING: self.redis_url, CLUSTER_URL_SETTING: self.cluster_url}[setting]

    def settings(self) -> dict[str, str]:
        """The environment settings that point `course_lib.connection` (and kernels) at this stack.

        On a machine that joined a workshop the standalone server is the room's, so its setting is
        left out: `connect()` reads the join line, `connect(room=False)` finds this stack by its folder.
        """
        settings = {REDIS_URL_SETTING: self.redis_url, CLUSTER_URL_SETTING: self.cluster_url,
                    RUNTIME_DIR_SETTING: str(self.folder)}
        if joined():
            del settings[REDIS_URL_SETTING]
        return settings

    def servers(self) -> list[Server]:
        return [self.standalone, *self.cluster]

    def to_json(self) -> str:
        return json.dumps({
            "engine": self.engine, "binary": self.binary, "owners": self.owners, "watchdog": self.watchdog,
            "standalone": self.standalone.as_dict(), "cluster": [s.as_dict() for s in self.cluster],
        }, indent=2)

    @classmethod
    def from_json(cls, text: str, folder: Path) -> "Stack":
        data = json.loads(text)
        return cls(
            engine=data["engine"], binary=data["binary"], owners=data["owners"], watchdog=data["watchdog"],
            standalone=Server(**data["standalone"]), cluster=[Server(**s) for s in data["cluster"]], folder=folder,
        )


def _state_file(folder: Path) -> Path:
    return folder / "state.json"


def load(folder: Path) -> Stack | None:
    """The recorded stack, or None when nothing is recorded or the record is unreadable."""
    try:
        stack = Stack.from_json(_state_file(folder).read_text(), folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stack.password = _password(folder)
    return stack


def _password(folder: Path) -> str | None:
    try:
        return (folder / PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def _new_password(folder: Path) -> str | None:
    """A fresh password for a new stack, or None (file removed) when `COURSE_REQUIRE_PASSWORD=0` asks for none."""
    if os.environ.get(PASSWORD_SETTING, "").strip().lower() in {"0", "false", "no"}:
        (folder / PASSWORD_FILE).unlink(missing_ok=True)
        return None
    password = secrets.token_urlsafe(32)
    write_secret(folder / PASSWORD_FILE, password)
    return password


def _save(stack: Stack) -> None:
    tmp = _state_file(stack.folder).with_suffix(".tmp")
    tmp.write_text(stack.to_json())
    tmp.replace(_state_file(stack.folder))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One `up`/`down`/`release` at a time per runtime folder, across processes."""
    with open(folder / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the cluster -------------------------------------------------------------------------------

def _slot_ranges(primaries: int) -> list[tuple[int, int]]:
    bounds = [round(i * SLOT_COUNT / primaries) for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


def _cluster_ready(nodes: list[Server]) -> bool:
    """Every node says cluster_state:ok and sees every node; every replica has its link to a primary up."""
    try:
        for node in nodes:
            with node.client() as client:
                info = client.cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(nodes):
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
                if replication["role"] == "master" and int(info.get("cluster_size", 0)) != PRIMARIES:
                    return False
            # Each slot range must be served by one primary and one replica, as every node sees it.
            slots = client_slots(node)
            if len(slots) != PRIMARIES or any(len(entry) != 2 for entry in slots):
                return False
        return True
    except (redis.RedisError, OSError, KeyError, ValueError):
        return False


def client_slots(node: Server) -> list[list[int]]:
    """CLUSTER SLOTS from one node, reduced to the ports serving each range (primary first)."""
    with node.client() as client:
        reply = client.execute_command("CLUSTER SLOTS")
    # Each entry: [first slot, last slot, [host, port, id, ...] of the primary, then one per replica].
    return [[address[1] for address in entry[2:]] for entry in reply]


def nodes_know_each_other(nodes: list[Server]) -> bool:
    """Every node lists every node, and none is still in a handshake: the MEETs have all landed."""
    for node in nodes:
        with node.client() as client:
            known = client.cluster("nodes").values()
        if len(known) != len(nodes) or any("handshake" in entry["flags"] for entry in known):
            return False
    return True


def form_cluster(nodes: list[Server], timeout: float = CLUSTER_READY_TIMEOUT) -> None:
    """Join fresh cluster-enabled nodes into PRIMARIES primaries, each with one replica.

    Commands: CLUSTER SET-CONFIG-EPOCH, ADDSLOTSRANGE, MEET, MYID, REPLICATE; returns only when
    `_cluster_ready` holds (a bounded wait on the cluster's own state, not a sleep).

    Raises:
        TimedOut: the nodes had not met, or the cluster was not ready, within `timeout` seconds.
    """
    primaries, replicas = nodes[:PRIMARIES], nodes[PRIMARIES:]
    for epoch, node in enumerate(nodes, start=1):
        with node.client() as client:
            client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
    for node, (first, last) in zip(primaries, _slot_ranges(PRIMARIES)):
        with node.client() as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
    # Every pair meets directly: quicker than letting gossip spread the news from one seed node.
    for index, node in enumerate(nodes):
        with node.client() as client:
            for other in nodes[index + 1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", other.port, other.bus_port)

    wait_for(lambda: nodes_know_each_other(nodes), timeout, "the cluster nodes to meet each other")
    for primary, replica in zip(primaries, replicas):
        with primary.client() as client:
            primary_id = client.execute_command("CLUSTER MYID")
        with replica.client() as client:
            client.execute_command("CLUSTER REPLICATE", primary_id)
    wait_for(lambda: _cluster_ready(nodes), timeout, "cluster_state:ok with every replica linked")


def _start_cluster(binary: ServerBinary, folder: Path, ports: list[int | None] | None = None,
                   password: str | None = None) -> list[Server]:
    nodes: list[Server] = []
    try:
        for port in ports or [None] * (2 * PRIMARIES):
            nodes.append(start_server(binary, folder / "cluster", cluster=True, port=port, password=password))
        form_cluster(nodes)
        return nodes
    except BaseException:
        for node in nodes:
            node.stop()
        raise


@contextlib.contextmanager
def scratch_cluster(binary: ServerBinary | None = None) -> Iterator[list[Server]]:
    """A private 6-node cluster (3 primaries + 3 replicas) for one demo, stopped and deleted on exit (or if this
    process dies).

    For lessons that break a cluster on purpose (killing a primary to watch a failover), so the
    shared cluster every other notebook uses is never touched. Nodes are listed primaries first.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="course-scratch-cluster-") as tmp, reaped_if_killed(Path(tmp)):
        nodes = _start_cluster(binary or find_binary(), Path(tmp))
        try:
            yield nodes
        finally:
            for node in nodes:
                node.stop()


# --- lifetime ----------------------------------------------------------------------------------

def _live_owners(owners: list[int] | None) -> list[int] | None:
    return None if owners is None else [pid for pid in owners if pid_alive(pid)]


def up(folder: str | os.PathLike | None = None, owner: int | None = None) -> Stack:
    """Make sure the standalone server and the cluster are running and healthy; return them.

    Args:
        folder: the runtime folder (default: `runtime_dir()`).
        owner: a pid to lease the servers to (see the module docstring); None keeps them until `down`.

    Raises:
        ServerError: no usable binary, or a server would not start; the message says what to do.
        TimedOut: the cluster did not form within `CLUSTER_READY_TIMEOUT` seconds.
    """
    path = runtime_dir(folder)
    with _locked(path):
        stack = load(path)
        if stack is not None and not stack.standalone.alive() and not any(s.alive() for s in stack.cluster):
            stack = None  # every recorded server is gone or is someone else's: start afresh
        binary = _binary_for(stack)
        if stack is None:
            password = _new_password(path)
            standalone = start_server(binary, path / "standalone", password=password)
            try:
                cluster = _start_cluster(binary, path, password=password)
            except BaseException:
                standalone.stop()
                raise
            stack = Stack(engine=binary.label, binary=binary.path, standalone=standalone, cluster=cluster,
                          owners=None if owner is None else [], folder=path, password=password)
        else:
            # Replacements take their predecessors' ports when free, so URLs already handed out stay valid.
            if not stack.standalone.alive():
                stack.standalone.stop()
                stack.standalone = start_server(binary, path / "standalone", port=stack.standalone.port,
                                                password=stack.password)
            if not (all(node.alive() for node in stack.cluster) and _cluster_ready(stack.cluster)):
                for node in stack.cluster:
                    node.stop()
                stack.cluster = _start_cluster(binary, path, ports=[node.port for node in stack.cluster],
                                               password=stack.password)
        stack.owners = _live_owners(stack.owners)
        if owner is not None:
            stack.owners = sorted({*(stack.owners or []), owner}) if stack.owners is not None else None
        if stack.owners is not None and not (stack.watchdog and pid_alive(stack.watchdog)):
            stack.watchdog = _start_watchdog(path)
        _save(stack)
        _sweep(path, keep={server.pid for server in stack.servers()})
        return stack


def _binary_for(stack: Stack | None) -> ServerBinary:
    """Replacements use the engine already running, so a stack never mixes Redis and Valkey."""
    if stack is not None:
        with contextlib.suppress(ServerError):
            return probe_binary(stack.binary)
    return find_binary()


def _sweep(path: Path, keep: set[int] = frozenset()) -> None:
    """Stop every server whose node folder lies in the runtime folder, except `keep`, and delete its folder.

    The node folders, not `state.json`, are the full record: a process killed in the middle of `up`
    leaves servers it never wrote down, and this finds them by their pid files (each checked in
    the process table, so a pid since reused by another program is left alone).
    """
    for pidfile in path.glob("*/node-*/server.pid"):
        node_dir = pidfile.parent
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text())
            if pid in keep:
                continue
            Server(port=int(node_dir.name.removeprefix("node-")), pid=pid, dir=str(node_dir)).stop()
            shutil.rmtree(node_dir, ignore_errors=True)


def _stop_everything(path: Path) -> None:
    _sweep(path)
    _state_file(path).unlink(missing_ok=True)


def down(folder: str | os.PathLike | None = None) -> bool:
    """Stop every server in the runtime folder, recorded or not, and forget them. True if a stack was recorded."""
    path = runtime_dir(folder)
    with _locked(path):
        existed = _state_file(path).exists()
        _stop_everything(path)
        return existed


def release(owner: int, folder: str | os.PathLike | None = None) -> bool:
    """End `owner`'s lease; the last lease to end stops the servers. Returns True if they were stopped."""
    path = runtime_dir(folder)
    with _locked(path):
        stack = load(path)
        if stack is None or stack.owners is None:
            return False
        stack.owners = [pid for pid in _live_owners(stack.owners) if pid != owner]
        if stack.owners:
            _save(stack)
            return False
        _stop_everything(path)
        return True


def _start_watchdog(folder: Path) -> int:
    """Start the watchdog (see `watch`), detached like the servers; returns its pid.

    `python -m course_lib watch` forks, prints the child's pid and exits, so the watchdog is nobody's
    child: it outlives the kernel that started it, and leaves no zombie or "still running" warning.
    """
    result = subprocess.run(
        [sys.executable, "-m", "course_lib", "watch", "--runtime-dir", str(folder)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
    )
    if result.returncode != 0 or not result.stdout.strip().isdigit():
        raise ServerError(f"The watchdog did not start: {result.stderr.strip()[-400:]}")
    return int(result.stdout)


def watch(folder: str | os.PathLike, poll: float = 0.2) -> None:
    """Body of the watchdog: wait until the leased stack has no live owner, then stop it.

    Returns as soon as the stack is gone, kept until `down` (no owners), or handed to another
    watchdog. Each look is taken under the runtime lock, so it never reads a half-finished `up`.
    """
    import time

    path = runtime_dir(folder)
    me = os.getpid()
    while True:
        with _locked(path):
            stack = load(path)
            if stack is None or stack.owners is None or stack.watchdog != me:
                return
            if not _live_owners(stack.owners):
                _stop_everything(path)
                return
        time.sleep(poll)  # a watchdog has no event to block on: a dead process sends none


def status(folder: str | os.PathLike | None = None) -> list[dict]:
    """One row per recorded server: role (as the server reports it now), port, pid, alive, slots."""
    path = runtime_dir(folder)
    stack = load(path)
    if stack is None:
        return []
    rows = [{"name": "standalone", "role": "standalone", "port": stack.standalone.port,
             "pid": stack.standalone.pid, "alive": stack.standalone.alive(), "slots": ""}]
    for index, node in enumerate(stack.cluster, start=1):
        role, slots = "?", ""
        if node.alive():
            with contextlib.suppress(redis.RedisError, OSError), node.client() as client:
                myself = next(e for e in client.cluster("nodes").values() if "myself" in e["flags"])
                role = "primary" if "master" in myself["flags"] else "replica"
                slots = " ".join("-".join(r) for r in myself["slots"])
        rows.append({"name": f"cluster-{index}", "role": role, "port": node.port, "pid": node.pid,
                     "alive": node.alive(), "slots": slots})
    return rows
