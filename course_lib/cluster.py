"""Redis Cluster from the client's side: hash slots, hash tags, who owns a key, redirections, failover.

A cluster splits the keyspace into 16384 hash slots; each primary owns some slot ranges and each
replica copies one primary. A key's slot is CRC16(key) mod 16384, where only the part inside the
first non-empty `{...}` counts when there is one (a *hash tag*), so keys sharing a tag share a slot
and can be used together in one multi-key command, transaction or Lua script.

The helpers here compute slots the way the server does (`key_slot`), read which primary owns them
(`shards`, `shard_of`), and deal with the moments a cluster changes under a client: confirming a
write reached a replica (`incr_replicated`, WAIT), waiting for a replica's promotion
(`wait_for_promotion`) and starting a killed node again from its folder (`restart_node`).

Keys written: only `incr_replicated`'s counter (a string holding a number), named by the caller.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from course_lib.servers import Server, ServerBinary, answers_as, server_args, wait_for

SLOTS = 16384


def crc16(data: bytes) -> int:
    """CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with.

    Bit by bit rather than table-driven: slower, but it is the definition, readable in six lines.
    """
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def hashed_part(key: str) -> str:
    """The part of `key` that decides its slot: the text inside the first `{...}` if that is
    non-empty, else the whole key.

    Only the FIRST `{` and the first `}` after it count: `a{b}{c}` hashes `b`, `{}x{y}` hashes
    the whole key (the first tag is empty), `a{b` has no tag at all.
    """
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key: str) -> int:
    """The hash slot of `key`, computed here exactly as CLUSTER KEYSLOT computes it on the server."""
    return crc16(hashed_part(key).encode()) % SLOTS


@dataclass(frozen=True)
class Shard:
    """One primary and its replicas, with the slot ranges they serve (addresses as "host:port")."""

    ranges: tuple[tuple[int, int], ...]
    primary: str
    replicas: tuple[str, ...]

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.ranges)


def shards(node: redis.Redis) -> list[Shard]:
    """The cluster's shards as one node sees them, ordered by their lowest slot (shard 0 owns slot 0).

    Command: CLUSTER SLOTS, sent to the single node `node` (a plain `redis.Redis`, e.g.
    `RedisCluster.get_default_node().redis_connection`). The order gives every shard a stable index
    to print, where ports would change from run to run.
    """
    grouped: dict[str, tuple[list[tuple[int, int]], tuple[str, ...]]] = {}
    for first, last, primary, *replicas in node.execute_command("CLUSTER SLOTS"):
        name = f"{primary[0]}:{primary[1]}"
        ranges, _ = grouped.setdefault(name, ([], tuple(f"{r[0]}:{r[1]}" for r in replicas)))
        ranges.append((int(first), int(last)))
    found = [Shard(tuple(sorted(ranges)), name, replicas) for name, (ranges, replicas) in grouped.items()]
    return sorted(found, key=lambda shard: shard.ranges[0][0])


def shard_of(cluster_shards: list[Shard], key: str) -> int:
    """The index (in `shards` order) of the shard that owns `key`'s slot.

    Raises:
        LookupError: no shard serves the slot (the cluster is down for it).
    """
    slot = key_slot(key)
    for index, shard in enumerate(cluster_shards):
        if shard.owns(slot):
            return index
    raise LookupError(f"slot {slot} is not served by any shard")


def incr_replicated(node: redis.Redis, key: str, replicas: int = 1, timeout_ms: int = 1000) -> tuple[int, int]:
    """INCR `key`, then WAIT until `replicas` replicas have it (or `timeout_ms` passes).

    Commands: INCR and WAIT in one pipeline, so both use ONE connection: WAIT waits for that
    connection's own last write. `node` must be a plain client of the key's primary.

    Returns:
        (the new value, how many replicas acknowledged it). Fewer replicas than asked means the
        write is NOT safe from a failover yet; the caller decides whether to retry or report it.

    Not a transaction, and not strong consistency: WAIT makes loss much less likely (an
    acknowledged write is on `replicas` replicas), but the write stays applied on the primary even
    when WAIT times out.
    """
    with node.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        value, acknowledged = pipe.execute()
    return int(value), int(acknowledged)


def _answers_ok(node: Server, role: str) -> bool:
    try:
        with node.client() as client:
            replication = client.info("replication")
            if replication["role"] != role or client.cluster("info")["cluster_state"] != "ok":
                return False
            return role == "master" or replication.get("master_link_status") == "up"
    except (redis.RedisError, OSError):
        return False


def wait_for_promotion(replica: Server, timeout: float) -> None:
    """Return once `replica` reports role master and cluster_state ok (a bounded wait on the event).

    Raises:
        ServerError: it did not happen within `timeout` seconds.
    """
    wait_for(lambda: _answers_ok(replica, "master"), timeout, f"the replica on port {replica.port} to be promoted")


def restart_node(binary: ServerBinary, node: Server, timeout: float = 15.0) -> Server:
    """Start a stopped cluster node again, from its own folder: same port, bus port and `nodes.conf`.

    `nodes.conf` holds the node's identity and its last view of the cluster, so the node rejoins
    as itself; having lost its slots to a promoted replica meanwhile, it becomes that replica's
    replica and resynchronises (the course's servers keep no data on disk). Returns once it
    answers; it is the caller's to stop.

    Raises:
        ServerError: it did not answer within `timeout` seconds.
    """
    folder = Path(node.dir)
    subprocess.run(server_args(binary, node.port, folder, node.bus_port, None), check=True,
                   capture_output=True, timeout=30)
    pidfile = folder / "server.pid"

    def started() -> int | None:
        if pidfile.exists() and pidfile.read_text().strip():
            pid = int(pidfile.read_text())
            return pid if answers_as(node.port, pid) else None
        return None

    pid = wait_for(started, timeout, f"the node on port {node.port} to start again")
    return Server(port=node.port, pid=pid, dir=node.dir, bus_port=node.bus_port)


def wait_for_rejoin(node: Server, timeout: float) -> None:
    """Return once `node` is a replica with its link to a primary up and the cluster ok.

    Raises:
        ServerError: it did not happen within `timeout` seconds.
    """
    wait_for(lambda: _answers_ok(node, "slave"), timeout, f"the node on port {node.port} to rejoin as a replica")
