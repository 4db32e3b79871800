"""Chapter 09's experiments: where keys land, a primary killed while clients write, a split brain,
a live resharding, a graceful vs a forced manual failover, a shard down, a slot explorer.

Keys written:
- `course:cluster:spread:...` (strings): `run_key_distribution`, on the cluster it is given;
- `course:cluster:failover:w<writer>:{w<i>}` (strings holding counters, or sets of write ids):
  `run_failover`, on a private scratch cluster that is deleted afterwards;
- `course:cluster:failover:split-brain:{w<i>}` (a set of order ids): `run_split_brain`, likewise;
- `course:cluster:lost-reply:counter` (a string holding a number) and `...:ids` (a set):
  `run_lost_reply`, on a private standalone server that is deleted afterwards;
- `course:cluster:reshard:{r<i>}:old:<n>` and `...:w:<n>` (strings holding numbers): `run_resharding`;
- `course:cluster:failover:manual-failover:{w<i>}` (a set of order ids): `run_manual_failover`;
- `course:cluster:failover:coverage:{w<i>}` (strings): `run_coverage`; these three each on a
  private scratch cluster (the first with a 4th primary of its own), deleted afterwards.

`run_failover`, `run_split_brain`, `run_resharding`, `run_manual_failover` and `run_coverage` never
touch the shared cluster: each starts its own with `runtime.scratch_cluster`; `run_lost_reply`
starts a server of its own with `servers.scratch_server`.
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

from course_lib.cluster import (SLOTS, cluster_state, hashed_part, join, key_slot, migrate_slot, node_id, restart_node,
                                set_on_every_node, shard_of, shards, wait_for_promotion, wait_for_rejoin)
from course_lib.concurrency import wait_for
from course_lib.keys import delete_prefix, key
from course_lib.servers import client_for, find_binary

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


# -- adding a primary and moving slots to it while a client writes --------------------------------

def _tags_on(cluster_shards, shard: int, count: int, prefix: str, taken: set[int] = frozenset()) -> list[str]:
    """`count` hash tags whose slots are distinct, on shard index `shard`, and not in `taken`."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        tag = f"{{{prefix}{n}}}"
        slot = key_slot(tag)
        if shard_of(cluster_shards, tag) == shard and slot not in taken and slot not in found:
            found[slot] = tag
        n += 1
    return list(found.values())


class _SlotWriter:
    """SETs `names` keys in each of its slots in turn, recording every attempt, the last value
    acknowledged for each key, and every error by type.

    While a slot is migrating, a write to a key the source has already sent away (or never had)
    meets an `ASK`; once every key has moved, every write in that slot does.
    """

    def __init__(self, client: RedisCluster, tags: list[str], names: int = 20):
        self.client, self.tags, self.names = client, tags, names
        self.attempted = {tag: 0 for tag in tags}
        self.acknowledged: dict[str, int] = {}  # key name: the last value a SET of it was acknowledged with
        self.replies = 0
        self.errors: dict[str, int] = {}

    def run(self, stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            for tag in self.tags:
                n += 1
                name = key(CHAPTER, "reshard", tag, "w", n % self.names)
                try:
                    self.client.set(name, n)
                    self.acknowledged[name] = n
                    self.replies += 1
                # AttributeError: redis-py 8.1 cannot follow an ASK to a node missing from its map
                # (redis/redis-py#2432); counted like any failed write, so the thread goes on.
                except (redis.RedisError, AttributeError) as error:
                    self.errors[type(error).__name__] = self.errors.get(type(error).__name__, 0) + 1
                finally:
                    self.attempted[tag] += 1  # counted once finished: see wait_for_attempts

    def wait_for_attempts(self, tag: str, more: int = 2, timeout: float = 10.0) -> None:
        """Return once `more` further writes in `tag`'s slot have finished (a bounded wait).

        With the default of 2, at least one of them was sent after this call: the first may have
        been on its way already.
        """
        mark = self.attempted[tag] + more
        wait_for(lambda: self.attempted[tag] >= mark, timeout, f"the writer to write in {tag}'s slot")


def _lost(reader: RedisCluster, expected: dict[str, int]) -> int:
    """How many keys no longer hold the value last acknowledged for them (missing or older)."""
    names = sorted(expected)
    values = reader.mget_nonatomic(names)
    return sum(value != str(expected[name]) for name, value in zip(names, values))


def _redirections(nodes) -> dict[str, int]:
    """MOVED and ASK replies the nodes have sent so far, summed (INFO errorstats, Redis >= 6.2, Valkey)."""
    sent = {"MOVED": 0, "ASK": 0}
    for node in nodes:
        with node.client() as client:
            stats = client.info("errorstats")
        for kind in sent:
            sent[kind] += stats.get(f"errorstat_{kind}", {}).get("count", 0)
    return sent


def run_resharding(slots: int = 16, keys_per_slot: int = 30, batch: int = 10, follow_redirections: bool = True,
                   introduce: bool = True, migrate_keys: bool = True, timeout: float = 15.0) -> pd.DataFrame:
    """Add a 4th primary to a running cluster and move `slots` slots to it while a client writes.

    On a private cluster, an application's `RedisCluster` client (made before the new node
    exists) creates new keys in `slots` slots of shard 0, over and over, from a thread; each of
    those slots already holds `keys_per_slot` keys. A 4th primary is started and joined with
    CLUSTER MEET (`cluster.join`). With `introduce`, it first gets one slot nobody writes, and one
    read through the client in that slot meets a `MOVED` that adds the node to the client's map:
    redis-py 8.1 learns nodes from CLUSTER SLOTS, which lists only nodes serving slots, and fails
    on an `ASK` to a node it does not know (redis/redis-py#2432). Then each slot moves with
    `cluster.migrate_slot` (`batch` keys per MIGRATE); after the first batch the experiment
    waits after each batch until the writer has sent another write in that slot (so every
    slot's migration is met by writes, and the last batch's wait by an ASK: the source then holds
    none of the slot's keys), and after the last handover until it wrote again in every slot.

    Degraded settings, for tests: `follow_redirections=False` gives the client one attempt per
    command (a MOVED or ASK is raised, not followed); `migrate_keys=False` lets the target claim
    each slot (IMPORTING, then SETSLOT NODE on the target alone) without MIGRATE: the source
    refuses SETSLOT NODE while it holds keys, but a claim with a newer config epoch outvotes it,
    and it drops the slot's keys when it hears of it.

    Returns one row: slots_moved, keys_migrated, writes attempted / acknowledged / failed, the
    MOVED and ASK replies the servers sent meanwhile (INFO errorstats: the writer is their only
    client sending keys), lost (keys, old or written, not holding the last value acknowledged for them) and left_on_source
    (keys still on the old owner in the moved slots). `attrs`: errors (by exception type),
    new_node_owns_the_slots (as the source sees the cluster), servers ((port, pid) of every node
    started, to check none outlives the run).
    """
    from course_lib.runtime import PRIMARIES, scratch_cluster
    from course_lib.servers import start_server

    binary = find_binary()
    with scratch_cluster(binary) as nodes:
        source_node = nodes[0]  # the primary of shard 0, which owns slot 0
        app = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in nodes[:PRIMARIES]],
                           decode_responses=True, socket_timeout=2)
        try:
            with source_node.client() as source:
                cluster_shards = shards(source)
                tags = _tags_on(cluster_shards, 0, slots, "r")
                moving = [key_slot(tag) for tag in tags]
                spare_tag, = _tags_on(cluster_shards, 0, 1, "spare", taken=set(moving))
                seeded = {key(CHAPTER, "reshard", tag, "old", i): i for tag in tags for i in range(keys_per_slot)}
                app.mset_nonatomic(seeded)
                new_node = start_server(binary, Path(source_node.dir).parent, cluster=True)
                nodes.append(new_node)  # scratch_cluster stops every node in its list on exit
                join(nodes[:-1], new_node, timeout)
                with new_node.client() as target:
                    if introduce:
                        migrate_slot(source, target, key_slot(spare_tag))
                        app.get(key(CHAPTER, "reshard", spare_tag, "probe"))  # MOVED: the client learns the node
                    if not follow_redirections:
                        app.RedisClusterRequestTTL = 1  # one attempt per command: a redirection is an error
                    writer = _SlotWriter(app, tags)
                    stop = threading.Event()
                    thread = threading.Thread(target=writer.run, args=(stop,), name="writer during resharding",
                                              daemon=True)
                    before = _redirections(nodes)
                    thread.start()
                    try:
                        for tag in tags:
                            writer.wait_for_attempts(tag, timeout=timeout)
                        keys_migrated = 0
                        for tag, slot in zip(tags, moving):
                            if migrate_keys:
                                keys_migrated += migrate_slot(
                                    source, target, slot, batch,
                                    after_batch=lambda tag=tag: writer.wait_for_attempts(tag, timeout=timeout))
                            else:  # the mistake: the target claims the slot, its keys are never sent
                                target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", node_id(source))
                                target.execute_command("CLUSTER SETSLOT", slot, "NODE", node_id(target))
                        for tag in tags:
                            writer.wait_for_attempts(tag, timeout=timeout)
                    finally:
                        stop.set()
                        thread.join(timeout=timeout)
                    sent = {kind: count - before[kind] for kind, count in _redirections(nodes).items()}
                    left = sum(source.execute_command("CLUSTER COUNTKEYSINSLOT", slot) for slot in moving)
                    owner = {shard.primary for shard in shards(source) if any(shard.owns(s) for s in moving)}
            with RedisCluster(host="127.0.0.1", port=new_node.port, decode_responses=True) as reader:
                lost = _lost(reader, {**seeded, **writer.acknowledged})
        finally:
            app.close()
        servers = [(node.port, node.pid) for node in nodes]
    frame = pd.DataFrame([{
        "resharding": f"{slots} slots to a new primary", "slots_moved": slots, "keys_before": len(seeded),
        "keys_migrated": keys_migrated,
        "attempted": sum(writer.attempted.values()), "acknowledged": writer.replies,
        "failed": sum(writer.errors.values()), "MOVED_sent": sent["MOVED"], "ASK_sent": sent["ASK"],
        "lost": lost, "left_on_source": left,
    }]).set_index("resharding")
    frame.attrs.update({"errors": dict(sorted(writer.errors.items())),
                        "new_node_owns_the_slots": owner == {f"127.0.0.1:{new_node.port}"}, "servers": servers})
    return frame


def resharding_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_resharding`'s claims, each a measurement against a threshold."""
    row = frame.iloc[0]
    return {
        f"the new primary owns the {row.slots_moved} moved slots, their keys moved with MIGRATE, none left behind":
            frame.attrs["new_node_owns_the_slots"] and row.keys_migrated >= row.keys_before
            and row.left_on_source == 0,
        "no write failed while the slots moved (the client followed every ASK and MOVED)":
            row.attempted > 0 and row.failed == 0,
        "the servers redirected the writer: at least one ASK per slot during its migration, and MOVED after":
            row.ASK_sent >= row.slots_moved and row.MOVED_sent >= 1,
        "no acknowledged write was lost": row.acknowledged > 0 and row.lost == 0,
    }


# -- a manual failover: graceful (the replica catches up first) or forced --------------------------

def _manual_failover(primary, replica, orders: str, mode: str, label: str, writes: int, stall_s: float,
                     timeout: float) -> dict:
    """One manual failover of `primary` to `replica` while the replica lags; returns the row of `run_manual_failover`."""
    marker = Path(replica.dir) / "dump.rdb"
    with primary.client() as app, replica.client(socket_timeout=stall_s + timeout) as admin:
        with app.pipeline(transaction=False) as pipe:  # the replica starts level: WAIT 1 confirms it
            pipe.sadd(orders, f"{label}-before").execute_command("WAIT", 1, 1000)
            pipe.execute()
        marker.unlink(missing_ok=True)  # a full resync leaves one behind
        replies: list = []

        def operator() -> None:  # the stall, then the failover, queued on the replica's connection
            with admin.pipeline(transaction=False) as pipe:
                pipe.save().execute_command("DEBUG", "SLEEP", stall_s)
                pipe.execute_command("CLUSTER FAILOVER", *mode.split())
                replies.extend(pipe.execute(raise_on_error=False))

        thread = threading.Thread(target=operator, name="operator on the replica", daemon=True)
        stall_ends_by = time.monotonic() + stall_s  # at the earliest: the stall cannot begin before the thread does
        thread.start()
        try:
            wait_for(marker.exists, timeout, "the replica to reach its stall")
            ids = [f"{label}-{n}" for n in range(writes)]
            acknowledged = []
            for order in ids:
                try:
                    if app.sadd(orders, order) == 1:
                        acknowledged.append(order)
                except redis.RedisError:
                    pass  # refused (the primary was already handing over): not acknowledged, not counted
            # Every write landed while the replica was not reading. The clock, not thread.is_alive(): a
            # thread not yet scheduled to read its replies is alive long after the failover happened.
            during_stall = time.monotonic() < stall_ends_by
        finally:
            thread.join(timeout=stall_s + timeout)
        if len(replies) != 3 or isinstance(replies[2], Exception):
            raise RuntimeError(f"CLUSTER FAILOVER {mode} was not accepted: {replies[2:]}")
        wait_for_promotion(replica, timeout)
        wait_for_rejoin(primary, timeout)  # the old primary, now the new one's replica, in sync
    with replica.client() as node:
        kept = node.smembers(orders) & set(acknowledged)
    return {"failover": f"CLUSTER FAILOVER {mode}".strip(), "acknowledged": len(acknowledged),
            "while_the_replica_lagged": during_stall, "kept": len(kept), "lost": len(acknowledged) - len(kept)}


def run_manual_failover(writes: int = 50, stall_s: float = 1.0, graceful: str = "", forced: str = "TAKEOVER",
                        timeout: float = 20.0) -> pd.DataFrame:
    """A planned failover, done twice on one private cluster: graceful, then forced, each while the replica lags.

    Each time, the replica is made to lag on purpose: an operator connection sends it SAVE,
    DEBUG SLEEP `stall_s` and CLUSTER FAILOVER [`mode`] in one pipeline (SAVE's `dump.rdb`
    tells this code the stall has begun). While it sleeps the app adds `writes` order ids to a
    set on the primary (SADD), each acknowledged; the primary streams them to the replica, which
    does not read them yet. The replica wakes and at once runs the failover:
    - CLUSTER FAILOVER (`graceful=""`): it asks its primary to stop taking writes and to tell it its
      replication offset, waits to have received that much, then is elected and promoted;
    - CLUSTER FAILOVER TAKEOVER (`forced`): it promotes itself there and then, without its primary
      and without a vote, and drops the replication stream it had not yet read.
    The second failover hands the shard back: the roles are swapped.

    Returns one row per failover: acknowledged, while_the_replica_lagged (every write was
    acknowledged during the stall), kept (on the new primary) and lost. Degraded settings, for
    tests: `graceful="TAKEOVER"`, or `stall_s=0` (the replica does not lag).
    """
    from course_lib.runtime import PRIMARIES, scratch_cluster

    with scratch_cluster() as nodes:
        primary, replica = nodes[0], nodes[PRIMARIES]  # shard 0's primary and its replica
        with primary.client() as node:
            orders = _counters(shards(node), "manual-failover", per_shard=1)[0]
        rows = []
        for label, mode in (("graceful", graceful), ("forced", forced)):
            rows.append(_manual_failover(primary, replica, orders, mode, label, writes, stall_s, timeout))
            primary, replica = replica, primary
        servers = [(node.port, node.pid) for node in nodes]
    frame = pd.DataFrame(rows).set_index("failover")
    frame.attrs["servers"] = servers
    return frame


def manual_failover_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_manual_failover`'s claims (rows: the graceful failover, then the forced one)."""
    graceful, forced = frame.iloc[0], frame.iloc[1]
    return {
        f"{graceful.name} on a lagging replica: it caught up first, none of {graceful.acknowledged} writes lost":
            bool(graceful.while_the_replica_lagged) and graceful.acknowledged > 0 and graceful.lost == 0,
        f"{forced.name} on a lagging replica: every write it had not received was lost ({forced.lost})":
            bool(forced.while_the_replica_lagged) and forced.acknowledged > 0 and forced.lost == forced.acknowledged,
    }


# -- a shard down: cluster-require-full-coverage and cluster-allow-reads-when-down -----------------

COVERAGE_SETTINGS = (  # (cluster-require-full-coverage, cluster-allow-reads-when-down): the defaults first
    ("yes", "no"), ("yes", "yes"), ("no", "no"),
)


def _outcome(call: Callable[[], object]) -> str:
    """What a command got, in words that are the same on every engine and every run."""
    try:
        reply = call()
    except redis.exceptions.ClusterDownError as error:
        return "CLUSTERDOWN (read-only)" if "read" in str(error) else "CLUSTERDOWN"
    except redis.exceptions.MovedError:
        return "MOVED to a node that does not answer"
    except redis.RedisError as error:
        return f"error {type(error).__name__}"
    return "answered" if reply is not None else "answered (nil)"


def _get_following_moved(client: redis.Redis, name: str):
    """GET `name`; after a MOVED, once more from the node it names (MovedError again if that one is down)."""
    try:
        return client.get(name)
    except redis.exceptions.MovedError as moved:
        try:
            with client_for(moved.port) as owner:  # no retries: a stopped node fails at once
                return owner.get(name)
        except redis.ConnectionError:
            raise moved from None


def run_coverage(stop_shard: bool = True, every_node: bool = True, timeout: float = 20.0) -> pd.DataFrame:
    """Stop one shard (its primary and its replica) and see what the rest of the cluster still serves.

    On a private cluster, one key is written on shard 0 and one on shard 2; then shard 2's
    primary and replica are shut down (no replica is left to promote). For each pair of settings
    in `COVERAGE_SETTINGS`, set with CONFIG SET on every surviving node (`cluster.set_on_every_node`;
    `every_node=False`: on shard 1's primary only, the mistake of configuring the node one is
    connected to), the experiment waits until each surviving node's cluster_state matches its own
    settings ("fail" while a slot is lost and full coverage is required, else "ok"), then asks
    shard 0's primary (a plain client: no redirection is followed) to read and write its key and
    to read the stopped shard's key.

    `stop_shard=False` stops nothing (a degraded setting, for tests). Returns one row per pair of
    settings: the outcomes of the three commands ("answered", "CLUSTERDOWN", "CLUSTERDOWN
    (read-only)", "MOVED to a node that does not answer": a MOVED is followed once) and shard 0's
    cluster_state.
    """
    from course_lib.runtime import PRIMARIES, scratch_cluster

    with scratch_cluster() as nodes:
        live, asked_about = nodes[0], nodes[1]
        down = [nodes[2], nodes[2 + PRIMARIES]]  # shard 2's primary and its replica
        with live.client() as node:
            live_key, dead_key = (_counters(shards(node), "coverage", per_shard=1)[index] for index in (0, 2))
        for name, node in ((live_key, nodes[0]), (dead_key, nodes[2])):
            with node.client() as client:
                client.set(name, "before")
        if stop_shard:
            for node in down:
                node.stop()
        survivors = [node for node in nodes if node not in down]

        def states_match() -> bool:
            for node in survivors:
                with node.client() as client:
                    full = client.config_get("cluster-require-full-coverage")["cluster-require-full-coverage"]
                if cluster_state(node) != ("fail" if stop_shard and full == "yes" else "ok"):
                    return False
            return True

        rows = []
        for full_coverage, reads_when_down in COVERAGE_SETTINGS:
            set_on_every_node(survivors if every_node else [asked_about],
                              cluster_require_full_coverage=full_coverage,
                              cluster_allow_reads_when_down=reads_when_down)
            wait_for(states_match, timeout, "every surviving node's cluster_state to follow its settings")
            with live.client() as client:
                rows.append({
                    "require-full-coverage": full_coverage, "allow-reads-when-down": reads_when_down,
                    "read on a live shard": _outcome(lambda: client.get(live_key)),
                    "write on a live shard": _outcome(lambda: client.set(live_key, full_coverage + reads_when_down)),
                    "read on the stopped shard": _outcome(lambda: _get_following_moved(client, dead_key)),
                    "cluster_state (shard 0)": cluster_state(live),
                })
        servers = [(node.port, node.pid) for node in nodes]
    frame = pd.DataFrame(rows).set_index(["require-full-coverage", "allow-reads-when-down"])
    frame.attrs["servers"] = servers
    return frame


def coverage_verdicts(frame: pd.DataFrame) -> dict[str, bool]:
    """`run_coverage`'s claims, one per pair of settings plus one about the stopped shard's keys."""
    default, reads, partial = (frame.loc[pair] for pair in COVERAGE_SETTINGS)
    refused = ("CLUSTERDOWN", "CLUSTERDOWN (read-only)")
    return {
        "full coverage required (the default): a live shard refuses reads and writes (CLUSTERDOWN)":
            default["read on a live shard"] == "CLUSTERDOWN" and default["write on a live shard"] == "CLUSTERDOWN",
        "with cluster-allow-reads-when-down yes: a live shard answers reads, refuses writes":
            reads["read on a live shard"] == "answered" and reads["write on a live shard"] in refused,
        "with cluster-require-full-coverage no: a live shard answers reads and writes":
            partial["read on a live shard"] == partial["write on a live shard"] == "answered",
        "the stopped shard's keys are unavailable under every setting":
            not (frame["read on the stopped shard"] == "answered").any(),
    }
