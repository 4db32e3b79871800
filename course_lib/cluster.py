"""Redis Cluster from the client's side: hash slots, hash tags, who owns a key, redirections, failover.

A cluster splits the keyspace into 16384 hash slots; each primary owns some slot ranges and each
replica copies one primary. A key's slot is CRC16(key) mod 16384, except when the key has a *hash
tag*: if the key's first `{` is followed, later on, by a `}`, and something lies between the two,
only that text is hashed. Nothing between them (`{}x{y}`) means the whole key is hashed: the server
never looks further for another tag. Keys sharing a tag share a slot, and can be used together in
one multi-key command, transaction or Lua script.

The helpers here compute slots the way the server does (`key_slot`), read which primary owns them
(`shards`, `shard_of`), and deal with the moments a cluster changes under a client: confirming a
write reached a replica (`incr_replicated`, WAIT), waiting for a replica's promotion
(`wait_for_promotion`) and starting a killed node again from its folder (`restart_node`). And the
operator's side of a running cluster: adding a primary (`join`), moving a slot to it with its keys
while clients work (`migrate_slot`), and settings that each node reads from its own configuration
(`set_on_every_node`, `cluster_state`).

Keys written: only `incr_replicated`'s counter (a string holding a number), named by the caller.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import redis

from course_lib.concurrency import wait_for
from course_lib.runtime import nodes_know_each_other
from course_lib.servers import Server, ServerBinary, answers_as, server_args

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


def hashed_part(key: str | bytes) -> str | bytes:
    """The part of `key` that decides its slot: its hash tag if it has one, else the whole key.

    The tag is the text between the key's FIRST `{` and the first `}` after that `{`, when that
    text is not empty. Nothing else is searched: `a{b}{c}` hashes `b`, `{{a}}` hashes `{a`,
    `}{x}` hashes `x`, `a{b` has no tag, and `{}x{y}` hashes the whole key (its first `{` is
    followed directly by `}`, and the later `{y}` is never looked at).
    """
    opening, closing = (b"{", b"}") if isinstance(key, bytes) else ("{", "}")
    start = key.find(opening)
    if start != -1:
        end = key.find(closing, start + 1)
        if end > start + 1:
            return key[start + 1:end]
    return key


def key_slot(key: str | bytes) -> int:
    """The hash slot of `key`, computed here exactly as CLUSTER KEYSLOT computes it on the server.

    A `str` key is hashed as its UTF-8 bytes (what redis-py sends); `{` and `}` are single ASCII
    bytes that no multi-byte UTF-8 character contains, so finding the tag in the text or in the
    bytes gives the same slot.
    """
    part = hashed_part(key)
    return crc16(part if isinstance(part, bytes) else part.encode()) % SLOTS


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

    Command: CLUSTER SHARDS (Redis >= 7.0, Valkey), sent to the single node `node` (a plain
    `redis.Redis`, e.g. `RedisCluster.get_default_node().redis_connection`); it replaces CLUSTER
    SLOTS, deprecated since 7.0. Only shards serving slots are listed, each with its primary and
    the replicas it reports healthy (`online`). The order gives every shard a stable index to
    print, where ports would change from run to run.
    """
    found = []
    for entry in node.execute_command("CLUSTER SHARDS"):
        entry = _fields(entry)
        bounds = [int(slot) for slot in entry["slots"]]  # flat: first, last, first, last...
        if not bounds:
            continue  # a primary that lost every slot (to a promoted replica) still shows up here
        members = [_fields(member) for member in entry["nodes"]]
        address = [f"{m['ip']}:{m['port']}" for m in members if m["role"] == "master"]
        replicas = tuple(f"{m['ip']}:{m['port']}" for m in members
                         if m["role"] == "replica" and m["health"] == "online")
        found.append(Shard(tuple(sorted(zip(bounds[::2], bounds[1::2]))), address[0], replicas))
    return sorted(found, key=lambda shard: shard.ranges[0][0])


def _fields(reply) -> dict:
    """A CLUSTER SHARDS map as a dict: RESP3 sends a map, RESP2 a flat list of names and values."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))


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
        write is NOT on a replica yet; the caller decides whether to retry or report it.

    Best effort, not a transaction and not durability. The write stays applied on the primary
    even when WAIT times out. A replica's acknowledgement means the write is in its memory, not
    on its disk (WAITAOF, on Redis >= 7.2 and Valkey with appendonly on, waits for the fsync).
    And an acknowledged write can still be lost in a failover: if a replica that did not have it
    is promoted, or if the primary sat on the minority side of a partition (a stalled primary,
    `experiments.cluster.run_split_brain`), whatever it took meanwhile is dropped when it
    rejoins as a replica.
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
        TimedOut: it did not happen within `timeout` seconds.
    """
    wait_for(lambda: _answers_ok(replica, "master"), timeout, f"the replica on port {replica.port} to be promoted")


def restart_node(binary: ServerBinary, node: Server, timeout: float = 15.0) -> Server:
    """Start a stopped cluster node again, from its own folder: same port, bus port and `nodes.conf`.

    `nodes.conf` holds the node's identity and its last view of the cluster, so the node rejoins
    as itself; having lost its slots to a promoted replica meanwhile, it becomes that replica's
    replica and resynchronises (the course's servers keep no data on disk). Returns once it
    answers; it is the caller's to stop.

    Raises:
        TimedOut: it did not answer within `timeout` seconds.
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
        TimedOut: it did not happen within `timeout` seconds.
    """
    wait_for(lambda: _answers_ok(node, "slave"), timeout, f"the node on port {node.port} to rejoin as a replica")


# -- changing a running cluster: adding a primary, moving slots, settings --------------------------

def node_id(node: redis.Redis) -> str:
    """The node's cluster id (CLUSTER MYID), the name CLUSTER SETSLOT, REPLICATE and FORGET use."""
    return node.execute_command("CLUSTER MYID")


def join(members: list[Server], new: Server, timeout: float = 15.0) -> None:
    """Introduce an empty cluster-enabled node `new` to the cluster of `members`, as a primary with no slot.

    Command: CLUSTER MEET, sent to one member; gossip spreads the news to the others. Returns once
    every member and `new` list each other without the `handshake` flag, and `new` reports
    cluster_state ok (bounded waits on the cluster's own view, not sleeps). The node serves nothing until slots are moved to it
    (`migrate_slot`); until then CLUSTER SLOTS, which redis-py builds its map from, does not list it.

    Raises:
        TimedOut: the nodes did not all agree within `timeout` seconds.
    """
    with members[0].client() as client:
        client.execute_command("CLUSTER MEET", "127.0.0.1", new.port, new.bus_port)
    everyone = [*members, new]
    wait_for(lambda: nodes_know_each_other(everyone), timeout, f"every node to know the new node on port {new.port}")
    # A new node answers CLUSTERDOWN (even to MIGRATE) until it has learnt who owns every slot.
    wait_for(lambda: cluster_state(new) == "ok", timeout, f"the new node on port {new.port} to report cluster_state ok")


def migrate_slot(source: redis.Redis, target: redis.Redis, slot: int, batch: int = 100,
                 after_batch: Callable[[], object] | None = None) -> int:
    """Move one hash slot, with its keys, from the primary `source` to the primary `target`, live.

    Commands, in the order that keeps every key reachable:
    1. CLUSTER SETSLOT slot IMPORTING on the target, then MIGRATING on the source. From now on the
       source answers for the keys it still has and replies `ASK` for the others (a new key too);
       the target serves a command only right after `ASKING`.
    2. CLUSTER GETKEYSINSLOT and MIGRATE ... KEYS, `batch` keys at a time, until the source holds
       none. MIGRATE is atomic per batch: each key is on one side or the other, never both or none.
    3. CLUSTER SETSLOT slot NODE target on the target first (it bumps its config epoch, so the
       cluster's gossip takes its claim), then on the source, which replies `MOVED` from then on.

    `after_batch` runs after each MIGRATE (an experiment waits there for its writers). Not atomic
    as a whole: a crash half-way leaves the slot MIGRATING/IMPORTING, to be finished or rolled
    back with CLUSTER SETSLOT ... STABLE. Returns how many keys moved.
    """
    address = target.connection_pool.connection_kwargs
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", node_id(source))
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", node_id(target))
    moved = 0
    while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, batch):
        source.migrate(address["host"], address["port"], keys, 0, 5000)
        moved += len(keys)
        if after_batch is not None:
            after_batch()
    for node in (target, source):
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", node_id(target))
    return moved


def set_on_every_node(nodes: list[Server], **settings: str) -> None:
    """CONFIG SET each setting (underscores for dashes) on every node: cluster settings are per node.

    `cluster-require-full-coverage`, `cluster-allow-reads-when-down` and the like are read by each
    node from its own configuration; set on one node only, the others go on behaving as before.
    Not persisted (add CONFIG REWRITE for a node started from a config file).
    """
    for node in nodes:
        with node.client() as client:
            for name, value in settings.items():
                client.config_set(name.replace("_", "-"), value)


def cluster_state(node: Server) -> str | None:
    """The node's own verdict on the cluster (CLUSTER INFO cluster_state: "ok" or "fail"); None if unreachable."""
    try:
        with node.client() as client:
            return client.cluster("info")["cluster_state"]
    except (redis.RedisError, OSError):
        return None
