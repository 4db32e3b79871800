"""Chapter 09's experiments: where keys land, a primary killed while clients write, a split brain, a slot explorer.

Keys written:
- `course:cluster:spread:...` (strings): `run_key_distribution`, on the cluster it is given;
- `course:cluster:failover:w<writer>:{w<i>}` (strings holding counters, or sets of write ids):
  `run_failover`, on a private scratch cluster that is deleted afterwards;
- `course:cluster:failover:split-brain:{w<i>}` (a set of order ids): `run_split_brain`, likewise;
- `course:cluster:lost-reply:counter` (a string holding a number) and `...:ids` (a set):
  `run_lost_reply`, on a private standalone server that is deleted afterwards.

`run_failover` and `run_split_brain` never touch the shared cluster: each starts its own with
`runtime.scratch_cluster`; `run_lost_reply` starts a server of its own with `servers.scratch_server`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import redis
from redis.backoff import ConstantBackoff, ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError
from redis.retry import Retry

from course_lib.cluster import (SLOTS, hashed_part, key_slot, restart_node, shard_of, shards, wait_for_promotion,
                                wait_for_rejoin)
from course_lib.keys import delete_prefix, key
from course_lib.servers import find_binary, wait_for

CHAPTER = "cluster"


# -- where keys land -----------------------------------------------------------------------------

def run_key_distribution(client: RedisCluster, users: int = 900, tag: str = "{users}") -> pd.DataFrame:
    """Write one key per user twice: named `user:<id>:profile`, then all under one common `tag`.

    Commands: SET (through the cluster client, which sends each key to its slot's primary), then
    SCAN MATCH on each primary to count what it really holds. Returns one row per naming, one
    column per shard (`shard 0` owns slot 0), counting keys.
    """
    namings = {  # label: (the keys' common prefix, the key of user i)
        "no tag: user:<id>:profile": ("plain", lambda i: key(CHAPTER, "spread", "plain", "user", i, "profile")),
        f"one tag: {tag}:<id>": ("tagged", lambda i: key(CHAPTER, "spread", "tagged", tag, i)),
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


def distribution_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_key_distribution`'s claims: untagged keys spread evenly, one common tag fills one shard."""
    plain, tagged = frame.iloc[0], frame.iloc[1]
    users = int(plain.sum())
    return {
        "without a tag, every shard holds between 25 % and 40 % of the keys":
            all(0.25 * users <= n <= 0.40 * users for n in plain),
        f"with one tag for every user, one shard holds all {users} keys":
            sorted(tagged) == [0] * (len(tagged) - 1) + [users],
    }


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

    Retries on connection errors, timeouts and CLUSTERDOWN (what every node answers while a slot
    range has no primary). Before the n-th retry, redis-py's ExponentialWithJitterBackoff pauses a
    random time between 0 and 50 ms x 2**n ("full jitter"), capped at 500 ms: up to 100, 200,
    400 ms, then up to 500 ms each time (about 0.45 s on average).
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


@dataclass(frozen=True)
class WriterSetup:
    """One writer of `run_failover`: its label, its application-level retries, and how it writes.

    `patience`: the retry budget of an application `Retry` around each write (`patient_retry`),
    None for the cluster client's own retries only. `write_ids`: None to INCR a counter (not
    idempotent: a retried INCR whose first attempt was applied counts twice); else the function
    naming the writer's n-th write, which is then SADDed to a set (idempotent: adding an id twice
    adds it once, and SADD's 0 tells the retry its write had already landed).
    """

    label: str
    patience: int | None = None
    write_ids: Callable[[int], str] | None = None


WRITERS = (
    WriterSetup("cluster client retry only"),
    WriterSetup("+ application Retry", patience=60),
    WriterSetup("+ application Retry, write ids", patience=60, write_ids=lambda n: f"write-{n}"),
)


class _Writer:
    """Writes to its counters in a loop, recording every acknowledged write, retry and failure."""

    def __init__(self, client: RedisCluster, counters: list[str], setup: WriterSetup):
        self.client, self.counters, self.setup = client, counters, setup
        self.patience = None if setup.patience is None else patient_retry(setup.patience)
        # Per counter, what each acknowledged write returned: INCR's new value, or the write's id.
        self.acknowledged: dict[str, list] = {name: [] for name in counters}
        self.attempted = self.gave_up = self.retried = self.refused = 0

    def write(self, name: str) -> None:
        self.attempted += 1
        write_id = None if self.setup.write_ids is None else self.setup.write_ids(self.attempted)

        def once():
            return self.client.incr(name) if write_id is None else self.client.sadd(name, write_id)

        try:
            reply = once() if self.patience is None else self.patience.call_with_retry(once, self._count_retry)
        except redis.RedisError:
            self.gave_up += 1
            return
        if write_id is None:
            self.acknowledged[name].append(reply)
        else:
            self.refused += reply == 0  # the id was there already: an earlier attempt had landed
            self.acknowledged[name].append(write_id)

    def _count_retry(self, _error: Exception) -> None:
        self.retried += 1

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for name in self.counters:
                self.write(name)

    def lost_and_unacknowledged(self, name: str) -> tuple[int, int]:
        """(acknowledged writes the counter no longer shows, writes it shows that were never acknowledged).

        An INCR counter at F shows the values 1..F: an acknowledged value above F, or one returned
        twice (a lost write re-done), is lost; a value in 1..F that no reply returned was applied
        without an acknowledgement (a retry whose first attempt had landed, or a failed INCR that
        landed after all). `GET` alone cannot tell: F - acknowledged nets the two out.
        """
        acknowledged = self.acknowledged[name]
        if self.setup.write_ids is None:
            shown = set(range(1, int(self.client.get(name) or 0) + 1))
        else:
            shown = self.client.smembers(name)
        kept = len(set(acknowledged) & shown)
        return len(acknowledged) - kept, len(shown) - kept


def run_failover(writes_after: int = 100, promotion_timeout: float = 30.0, restart: bool = True,
                 writers: tuple[WriterSetup, ...] = WRITERS, node_timeout_ms: int | None = None) -> pd.DataFrame:
    """Kill a primary with SIGKILL while writer threads write to every shard; watch the failover.

    On a private 6-node cluster, each writer (`WRITERS`: the cluster client's retries only, an
    application Retry, an application Retry with idempotent write ids) loops over six counters of
    its own, two per shard. The primary owning shard 0 is killed; the experiment waits for its
    replica to report role master (and cluster_state ok), then for each writer to get
    `writes_after` more writes acknowledged on shard 0, stops them and reads every counter back.
    With `restart`, the killed node is started again from its folder and must rejoin as a replica
    of the promoted one. `node_timeout_ms` replaces the scratch cluster's cluster-node-timeout
    (2 s; the server's default is 15 s).

    Returns one row per writer: attempted, acknowledged, gave_up (writes that raised), retried
    (failed attempts the application Retry repeated), refused_as_duplicate (retries whose write
    id was already there), lost_on_failed_shard and lost_elsewhere (acknowledged writes the
    counters no longer show), applied_unacknowledged (writes the counters show that no reply
    acknowledged: for INCR, a retry applied twice). `attrs`: promoted_after_s, rejoined_as_replica
    (None without `restart`).
    """
    from course_lib.runtime import PRIMARIES, scratch_cluster

    binary = find_binary()
    with scratch_cluster(binary) as nodes:
        if node_timeout_ms is not None:
            for node in nodes:
                with node.client() as client:
                    client.config_set("cluster-node-timeout", node_timeout_ms)
        with nodes[0].client(protocol=3) as node:
            cluster_shards = shards(node)
        running = [_Writer(failover_client(nodes[:PRIMARIES]), _counters(cluster_shards, f"w{index}"), setup)
                   for index, setup in enumerate(writers)]
        try:
            stop = threading.Event()
            threads = [threading.Thread(target=w.run, args=(stop,), name=f"writer: {w.setup.label}", daemon=True)
                       for w in running]
            for thread in threads:
                thread.start()
            try:
                wait_for(lambda: all(len(w.acknowledged[name]) >= 20 for w in running for name in w.counters), 15,
                         "the writers to warm up")
                failed, = [shard for shard in cluster_shards if shard.owns(0)]
                victim, replica = ([node for node in nodes if f"127.0.0.1:{node.port}" == address][0]
                                   for address in (failed.primary, failed.replicas[0]))
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                wait_for_promotion(replica, promotion_timeout)
                promoted_after = time.monotonic() - killed_at
                marks = [len(w.acknowledged[w.counters[0]]) + writes_after for w in running]
                wait_for(lambda: all(len(w.acknowledged[w.counters[0]]) >= mark for w, mark in zip(running, marks)),
                         promotion_timeout, "the writers to write to the promoted replica")
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
            rows = []
            for writer in running:
                counts = {name: writer.lost_and_unacknowledged(name) for name in writer.counters}
                on_failed = {name: failed.owns(key_slot(name)) for name in writer.counters}
                rows.append({"writer": writer.setup.label, "attempted": writer.attempted,
                             "acknowledged": sum(map(len, writer.acknowledged.values())),
                             "gave_up": writer.gave_up, "retried": writer.retried,
                             "refused_as_duplicate": writer.refused,
                             "lost_on_failed_shard": sum(lost for name, (lost, _) in counts.items() if on_failed[name]),
                             "lost_elsewhere": sum(lost for name, (lost, _) in counts.items() if not on_failed[name]),
                             "applied_unacknowledged": sum(extra for _, extra in counts.values())})
            rejoined = None
            if restart:
                # Replace the dead entry, so scratch_cluster stops the restarted process on exit.
                nodes[nodes.index(victim)] = restarted = restart_node(binary, victim)
                wait_for_rejoin(restarted, promotion_timeout)
                with restarted.client() as node:
                    rejoined = int(node.info("replication")["master_port"]) == replica.port
        finally:
            for writer in running:
                writer.client.close()
    frame = pd.DataFrame(rows).set_index("writer")
    frame.attrs.update({"promoted_after_s": round(promoted_after, 2), "rejoined_as_replica": rejoined})
    return frame


def failover_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_failover`'s claims, each a measurement against a threshold (writers in `WRITERS` order)."""
    plain, patient, with_ids = (frame.iloc[index] for index in range(3))
    return {
        "the replica was promoted within 15 s": frame.attrs["promoted_after_s"] < 15,
        "with the cluster client's own retries only, some writes failed during the gap": plain.gave_up > 0,
        "with an application-level Retry, no write failed (it retried instead)":
            patient.gave_up == 0 and patient.retried > 0 and with_ids.gave_up == 0,
        "no writer lost an acknowledged write on the surviving shards": (frame.lost_elsewhere == 0).all(),
        "with write ids, no write was applied twice or without an acknowledgement":
            with_ids.applied_unacknowledged == 0 and with_ids.lost_elsewhere == 0,
        "the killed node came back as a replica of the promoted one": frame.attrs["rejoined_as_replica"] is True,
    }


# -- a reply lost after the write landed ---------------------------------------------------------

def run_lost_reply(stall_s: float = 2.0, timeout_s: float = 0.3, id_per_attempt: bool = False) -> pd.DataFrame:
    """One write whose reply is lost after it landed, retried: INCR counts it twice, a write id once.

    On a private standalone server, an admin connection stalls the server (SAVE, then DEBUG SLEEP
    `stall_s`; SAVE's `dump.rdb` appearing tells this code the stall has begun). The app, connected
    beforehand, sends one write; its socket timeout (`timeout_s`) expires while the server sleeps,
    so it never reads the reply: it drops the connection and retries once, after the stall. The
    server had read the write and runs it when it wakes, so the retry applies it a second time.
    Done for INCR of a counter, then for SADD of a write id made once per write, outside the
    retried function (`id_per_attempt=True` makes a new id on each attempt: the classic bug).

    Returns one row per write: acknowledged (replies the app got), applied (the counter's value or
    the set's size afterwards), retry_answer (what the retry was told).
    """
    from course_lib.servers import scratch_server

    rows = []
    with scratch_server() as server:
        marker = Path(server.dir) / "dump.rdb"
        with server.client(socket_timeout=stall_s + 10) as admin, server.client(socket_timeout=timeout_s) as app:
            app.ping()  # connected: the stall must catch the write itself, not the connection handshake
            counter, ids = key(CHAPTER, "lost-reply", "counter"), key(CHAPTER, "lost-reply", "ids")
            writes = {
                "INCR, retried": (lambda: app.incr(counter), lambda: int(app.get(counter))),
                "SADD of a write id, retried": (_sadd_once(app, ids, id_per_attempt), lambda: app.scard(ids)),
            }

            def stall_the_server() -> None:
                with admin.pipeline(transaction=False) as pipe:
                    pipe.save().execute_command("DEBUG", "SLEEP", stall_s).execute()

            for label, (write, applied) in writes.items():
                marker.unlink(missing_ok=True)
                stall = threading.Thread(target=stall_the_server, name="a stall on the server", daemon=True)
                stall.start()
                wait_for(marker.exists, 10, "the server to reach its stall")
                # One retry, after the stall is over: a longer backoff than the stall.
                retry = Retry(ConstantBackoff(stall_s + 0.5), 1, supported_errors=(redis.TimeoutError,))
                answer = retry.call_with_retry(write, lambda _error: None)
                stall.join(timeout=stall_s + 10)
                rows.append({"write": label, "acknowledged": 1, "applied": applied(), "retry_answer": answer})
    return pd.DataFrame(rows).set_index("write")


def _sadd_once(app: redis.Redis, ids: str, id_per_attempt: bool) -> Callable[[], int]:
    """The write of `run_lost_reply`'s second row: SADD of an id chosen once per write (or per attempt)."""
    write_id = f"write-{uuid.uuid4()}"
    if id_per_attempt:
        return lambda: app.sadd(ids, f"write-{uuid.uuid4()}")
    return lambda: app.sadd(ids, write_id)


def lost_reply_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_lost_reply`'s claims: the retried INCR counted twice, the retried write id once."""
    incr, ids = frame.loc["INCR, retried"], frame.loc["SADD of a write id, retried"]
    return {
        "the retried INCR was applied twice for one write": incr.applied == 2 * incr.acknowledged,
        "the retried SADD of one write id was applied once, and the retry was told so":
            ids.applied == ids.acknowledged and ids.retry_answer == 0,
    }


# -- split brain: a stalled primary keeps acknowledging after its replica took over ---------------

def run_split_brain(writes: int = 50, stall_s: float = 1.5, promote: bool = True,
                    timeout: float = 20.0) -> pd.DataFrame:
    """A primary stalls; its replica is promoted meanwhile; the primary wakes up and still acknowledges.

    On a private cluster, an app server adds order ids to a set on shard 0 (SADD, then WAIT 1 on
    the same connection). Then, in one pipeline, it sends the primary SAVE, DEBUG SLEEP `stall_s`
    (a stall: a VM pause, a swap storm), `writes` more SADDs and WAIT 1. While the primary sleeps,
    its replica is promoted with CLUSTER FAILOVER TAKEOVER (no vote: as an operator does when the
    primary looks dead). The primary wakes and runs the queued SADDs at once, still believing it
    owns the slot, before it reads the cluster bus that tells it otherwise: the minority side of a
    partition, in miniature. Then it hears of the takeover, rejoins as the new primary's replica,
    resynchronises, and what it took meanwhile is gone. `promote=False` skips the takeover.

    SAVE writes `dump.rdb` right before the stall: the file's appearance is the event telling this
    code the primary has reached DEBUG SLEEP (no guessing with a sleep of our own).

    Returns two rows, "before the stall" and "after the takeover" (the writes the old primary
    acknowledged that the promoted replica did not have): acknowledged, confirmed_by_wait (writes
    a WAIT 1 then reported on a replica), kept (on the primary serving the slot at the end).
    `attrs`: rejoined_as_replica (None when not promoted).
    """
    from course_lib.runtime import PRIMARIES, scratch_cluster

    with scratch_cluster() as nodes:
        old, new = nodes[0], nodes[PRIMARIES]  # shard 0's primary and its replica
        with old.client() as node:
            orders = _counters(shards(node), "split-brain", per_shard=1)[0]
        marker = Path(old.dir) / "dump.rdb"
        with old.client(socket_timeout=stall_s + timeout) as app, new.client() as replica:
            before = [f"order-{n}" for n in range(10)]
            confirmed_before = 0
            for order in before:
                with app.pipeline(transaction=False) as pipe:  # WAIT counts this connection's writes
                    _, replicas = pipe.sadd(orders, order).execute_command("WAIT", 1, 1000).execute()
                confirmed_before += replicas >= 1
            during = [f"order-{n}" for n in range(len(before), len(before) + writes)]
            replies: list = []

            def app_server() -> None:
                with app.pipeline(transaction=False) as pipe:
                    pipe.save().execute_command("DEBUG", "SLEEP", stall_s)
                    for order in during:
                        pipe.sadd(orders, order)
                    pipe.execute_command("WAIT", 1, 500)
                    replies.extend(pipe.execute(raise_on_error=False)[2:])

            thread = threading.Thread(target=app_server, name="app server on the old primary", daemon=True)
            thread.start()
            try:
                wait_for(marker.exists, timeout, "the old primary to reach its stall")
                had = set()
                if promote:
                    replica.execute_command("CLUSTER FAILOVER", "TAKEOVER")
                    wait_for_promotion(new, timeout)
                    had = replica.smembers(orders)  # what the new primary started with
            finally:
                thread.join(timeout=stall_s + timeout)
            if not replies:
                raise RuntimeError("the app server's pipeline on the old primary did not finish")
            *added, waited = replies
            after = [order for order, reply in zip(during, added) if reply == 1 and (promote and order not in had)]
            rejoined = None
            if promote:
                wait_for_rejoin(old, timeout)
                with old.client() as node:
                    rejoined = int(node.info("replication")["master_port"]) == new.port
            final = (replica if promote else app).smembers(orders)
    # WAIT after a takeover: an error (the primary turned replica while it waited) or 0 replicas.
    confirmed_after = len(after) if isinstance(waited, int) and waited >= 1 else 0
    frame = pd.DataFrame([
        {"writes": "before the stall", "acknowledged": len(before), "confirmed_by_wait": confirmed_before,
         "kept": len(set(before) & final)},
        {"writes": "after the takeover", "acknowledged": len(after), "confirmed_by_wait": confirmed_after,
         "kept": len(set(after) & final)},
    ]).set_index("writes")
    frame.attrs["rejoined_as_replica"] = rejoined
    return frame


def split_brain_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_split_brain`'s claims, each a measurement against a threshold."""
    after = frame.loc["after the takeover"]
    return {
        f"writes acknowledged by the old primary after the takeover: {after.acknowledged} > 0": after.acknowledged > 0,
        "of them lost after it rejoined: all": after.acknowledged > 0 and after.kept == 0,
        "WAIT 1 after them found no replica that had them": after.acknowledged > 0 and after.confirmed_by_wait == 0,
        "the old primary rejoined as a replica of the new one": frame.attrs["rejoined_as_replica"] is True,
    }


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
