"""Chapter 09's experiments: where keys land, a primary killed while a client writes, a slot explorer.

Keys written:
- `course:cluster:spread:...` (strings): `run_key_distribution`, on the cluster it is given;
- `course:cluster:failover:<writer>:{w<i>}` (strings holding counters): `run_failover`, on a private
  scratch cluster that is deleted afterwards.

`run_failover` never touches the shared cluster: it starts its own with `runtime.scratch_cluster`.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError
from redis.retry import Retry

from course_lib.cluster import (SLOTS, hashed_part, key_slot, restart_node, shard_of, shards, wait_for_promotion,
                                wait_for_rejoin)
from course_lib.keys import delete_prefix, key
from course_lib.servers import find_binary, wait_for

CHAPTER = "cluster"


# -- where keys land -----------------------------------------------------------------------------

def run_key_distribution(client: RedisCluster, users: int = 900) -> pd.DataFrame:
    """Write one key per user twice: named `user:<id>:profile`, then all under one tag `{users}`.

    Commands: SET (through the cluster client, which sends each key to its slot's primary), then
    SCAN MATCH on each primary to count what it really holds. Returns one row per naming, one
    column per shard (`shard 0` owns slot 0), counting keys.
    """
    namings = {  # label: (the keys' common prefix, the key of user i)
        "no tag: user:<id>:profile": ("plain", lambda i: key(CHAPTER, "spread", "plain", "user", i, "profile")),
        "one tag: {users}:<id>": ("tagged", lambda i: key(CHAPTER, "spread", "tagged", "{users}", i)),
    }
    delete_prefix(client, key(CHAPTER, "spread") + ":")
    cluster_shards = shards(client.get_default_node().redis_connection)
    primaries = {f"{node.host}:{node.port}": node.redis_connection for node in client.get_primaries()}
    rows = []
    for naming, (part, name) in namings.items():
        with client.pipeline(transaction=False) as pipe:
            for i in range(users):
                pipe.set(name(i), i)
            pipe.execute()
        match = key(CHAPTER, "spread", part) + ":*"
        row = {"naming": naming}
        for index, shard in enumerate(cluster_shards):
            row[f"shard {index}"] = sum(1 for _ in primaries[shard.primary].scan_iter(match=match, count=1000))
        rows.append(row)
    delete_prefix(client, key(CHAPTER, "spread") + ":")
    return pd.DataFrame(rows).set_index("naming")


# -- a primary killed while a client writes ------------------------------------------------------

def failover_client(nodes, retries: int = 3) -> RedisCluster:
    """A cluster client for a failover: explicit Retry with exponential backoff and jitter.

    On a connection error, a timeout or CLUSTERDOWN, RedisCluster re-reads the slot map from the
    nodes still answering and tries again, up to `retries` times. redis-py 8.1 takes only the
    count from `retry`: after a connection error it tries again at once, without the backoff's
    pauses (after CLUSTERDOWN it pauses a fixed 250 ms). Enough to follow a MOVED after a failover,
    not to wait one out. Short socket timeouts make a dead node fail fast.
    """
    return RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in nodes],
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
        decode_responses=True, protocol=3, socket_timeout=1, socket_connect_timeout=0.5,
    )


def patient_retry(retries: int = 60) -> Retry:
    """An application-level Retry whose budget (about 25 s) outlasts a failover (a few seconds).

    Backs off 50 ms, 100 ms, 200 ms, then 500 ms (+ jitter) between attempts, on connection errors,
    timeouts and CLUSTERDOWN (what every node answers while a slot range has no primary).
    """
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries,
                 supported_errors=(redis.ConnectionError, redis.TimeoutError, ClusterDownError))


def _counters(cluster_shards, writer: str, per_shard: int = 2) -> list[str]:
    """`per_shard` counter names on every shard, shard 0 first, found by trying tags in order."""
    by_shard: dict[int, list[str]] = {index: [] for index in range(len(cluster_shards))}
    tag = 0
    while min(map(len, by_shard.values())) < per_shard:
        name = key(CHAPTER, "failover", writer, f"{{w{tag}}}")
        found = by_shard[shard_of(cluster_shards, name)]
        if len(found) < per_shard:
            found.append(name)
        tag += 1
    return [name for index in sorted(by_shard) for name in by_shard[index]]


class _Writer:
    """INCRs its counters in a loop, counting what was acknowledged, retried and given up."""

    def __init__(self, client: RedisCluster, counters: list[str], patience: Retry | None):
        self.client, self.counters, self.patience = client, counters, patience
        self.acknowledged = dict.fromkeys(counters, 0)
        self.attempted = self.gave_up = self.retried = 0

    def incr(self, name: str) -> None:
        if self.patience is None:
            self.client.incr(name)
        else:
            self.patience.call_with_retry(lambda: self.client.incr(name), self._count_retry)

    def _count_retry(self, _error: Exception) -> None:
        self.retried += 1

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for name in self.counters:
                self.attempted += 1
                try:
                    self.incr(name)
                    self.acknowledged[name] += 1
                except redis.RedisError:
                    self.gave_up += 1


def run_failover(writes_after: int = 100, promotion_timeout: float = 30.0, restart: bool = True) -> pd.DataFrame:
    """Kill a primary with SIGKILL while two threads INCR counters on every shard; watch the failover.

    On a private 6-node cluster, two writers each loop over six counters (two per shard): one relies
    on the cluster client's own retries, the other also wraps each INCR in `patient_retry()`. The
    primary owning shard 0 is killed; the experiment waits for its replica to report role master
    (and cluster_state ok), then for each writer to get `writes_after` more INCRs acknowledged on
    shard 0, stops them and reads every counter back. With `restart`, the killed node is started
    again from its folder and must rejoin as a replica of the promoted one.

    Returns one row per writer: attempted, acknowledged, gave_up (INCRs that raised), retried
    (failed attempts the application Retry repeated), lost_on_failed_shard and lost_elsewhere
    (acknowledged INCRs the counters no longer show; negative if a failed INCR was applied after
    all). `attrs`: promoted_after_s, rejoined_as_replica (None without `restart`).
    """
    from course_lib.runtime import PRIMARIES, scratch_cluster

    binary = find_binary()
    with scratch_cluster(binary) as nodes:
        with nodes[0].client(protocol=3) as node:
            cluster_shards = shards(node)
        writers = {name: _Writer(failover_client(nodes[:PRIMARIES]), _counters(cluster_shards, part), patience)
                   for name, part, patience in (("cluster client retry only", "plain", None),
                                                ("+ application Retry", "patient", patient_retry()))}
        try:
            stop = threading.Event()
            threads = [threading.Thread(target=w.run, args=(stop,), name=f"writer: {n}", daemon=True)
                       for n, w in writers.items()]
            for thread in threads:
                thread.start()
            try:
                wait_for(lambda: all(min(w.acknowledged.values()) >= 20 for w in writers.values()), 15,
                         "the writers to warm up")
                failed, = [shard for shard in cluster_shards if shard.owns(0)]
                victim, replica = ([node for node in nodes if f"127.0.0.1:{node.port}" == address][0]
                                   for address in (failed.primary, failed.replicas[0]))
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                wait_for_promotion(replica, promotion_timeout)
                promoted_after = time.monotonic() - killed_at
                marks = {n: w.acknowledged[w.counters[0]] + writes_after for n, w in writers.items()}
                wait_for(lambda: all(w.acknowledged[w.counters[0]] >= marks[n] for n, w in writers.items()),
                         promotion_timeout, "the writers to write to the promoted replica")
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
            rows = []
            for name, writer in writers.items():
                lost = {name: writer.acknowledged[name] - int(writer.client.get(name) or 0) for name in writer.counters}
                on_failed = {name: failed.owns(key_slot(name)) for name in writer.counters}
                rows.append({"writer": name, "attempted": writer.attempted,
                             "acknowledged": sum(writer.acknowledged.values()), "gave_up": writer.gave_up,
                             "retried": writer.retried,
                             "lost_on_failed_shard": sum(v for k, v in lost.items() if on_failed[k]),
                             "lost_elsewhere": sum(v for k, v in lost.items() if not on_failed[k])})
            rejoined = None
            if restart:
                # Replace the dead entry, so scratch_cluster stops the restarted process on exit.
                nodes[nodes.index(victim)] = restarted = restart_node(binary, victim)
                wait_for_rejoin(restarted, promotion_timeout)
                with restarted.client() as node:
                    rejoined = int(node.info("replication")["master_port"]) == replica.port
        finally:
            for writer in writers.values():
                writer.client.close()
    frame = pd.DataFrame(rows).set_index("writer")
    frame.attrs.update({"promoted_after_s": round(promoted_after, 2), "rejoined_as_replica": rejoined})
    return frame


# -- slot explorer -------------------------------------------------------------------------------

def describe_key(cluster_shards, name: str) -> str:
    """One line about `name`: its slot, the part hashed, the shard (by index) that owns it."""
    part = hashed_part(name)
    tag = f"hash tag {part!r}" if part != name else "no hash tag: the whole key is hashed"
    return (f"slot {key_slot(name)} of {SLOTS} · {tag} · "
            f"shard {shard_of(cluster_shards, name)} of {len(cluster_shards)}")


def slot_explorer_widget(client: RedisCluster, initial: str = "user:{42}:cart"):
    """Type a key: its slot, the part that was hashed and the index of the shard that owns it.

    Pure computation over the cluster's slot map (read once, with CLUSTER SHARDS): nothing is
    written, and no port is shown, so the text is the same on every run of the same cluster layout.
    """
    import ipywidgets as widgets

    cluster_shards = shards(client.get_default_node().redis_connection)
    name = widgets.Text(value=initial, description="key", continuous_update=True)
    answer = widgets.Label(value=describe_key(cluster_shards, initial))

    def on_change(change) -> None:
        answer.value = describe_key(cluster_shards, change["new"]) if change["new"] else "type a key"

    name.observe(on_change, names="value")
    return widgets.VBox([name, answer])
