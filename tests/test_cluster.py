"""Chapter 09: hash slots, hash tags, redirections, failovers, resharding and coverage, against real clusters."""

import binascii
import re
import time
from pathlib import Path

import pytest
import redis
from redis.exceptions import ClusterCrossSlotError, MovedError

from course_lib import cluster
from course_lib.exercises import evaluate
from course_lib.exercises import cluster as checkers
from course_lib.exercises.solutions import cluster as reference
from course_lib.experiments import cluster as experiments
from course_lib.connection import credentials
from course_lib.keys import key
from course_lib.runtime import scratch_cluster
from course_lib.servers import find_binary, is_our_server, start_server


def _node_client(rc, node):
    return redis.Redis(host=node.host, port=node.port, decode_responses=True, protocol=3, **credentials(rc))


def test_crc16_is_xmodem():
    assert cluster.crc16(b"123456789") == 0x31C3  # the published XMODEM check value
    assert cluster.crc16(b"") == 0


@pytest.mark.parametrize("name, hashed", [
    ("user:42", "user:42"), ("user:{42}:cart", "42"), ("a{b}{c}", "b"), ("{}x{y}", "{}x{y}"),
    ("a{b", "a{b"), ("}{x}", "x"), ("{{a}}", "{a"), ("x{}", "x{}"), (b"a{b}{c}", b"b"), (b"{}x{y}", b"{}x{y}"),
])
def test_hashed_part_is_between_the_first_brace_and_the_next_closing_one(name, hashed):
    assert cluster.hashed_part(name) == hashed


def test_key_slot_matches_cluster_keyslot_for_many_keys(rc):
    names = [f"key:{i}" for i in range(300)] + [f"{{tag:{i % 7}}}:{i}" for i in range(100)] + checkers.TRICKY_KEYS
    assert [cluster.key_slot(name) for name in names] == [rc.cluster_keyslot(name) for name in names]


def test_key_slot_verdict_fails_for_a_slot_of_the_whole_key(rc):
    """The notebook's agreement verdict, fed a regression (hash tags ignored), turns False."""
    names = [f"key:{i}" for i in range(1000)] + ["user:{42}:cart", "a{b}{c}", "{}x{y}", "a{b", "ünïcödé"]
    whole_key = [cluster.crc16(name.encode()) % cluster.SLOTS for name in names]
    assert whole_key != [rc.cluster_keyslot(name) for name in names]


def test_key_slot_of_bytes_that_are_not_utf8(rc):
    with _node_client(rc, rc.get_default_node()) as node:
        for name in (b"\xff{\xfe}x", b"\xff\xfe", b"{}\xff{y}"):
            assert cluster.key_slot(name) == node.execute_command("CLUSTER KEYSLOT", name)


def test_shards_cover_every_slot_and_match_the_client_routing(rc):
    shards = cluster.shards(rc.get_default_node().redis_connection)
    assert len(shards) == 3 and all(len(shard.replicas) == 1 for shard in shards)
    assert sum(last - first + 1 for shard in shards for first, last in shard.ranges) == cluster.SLOTS
    assert shards[0].owns(0) and shards[-1].owns(cluster.SLOTS - 1)
    for i in range(60):
        name = key("cluster", "route", i)
        node = rc.get_node_from_key(name)
        assert shards[cluster.shard_of(shards, name)].primary == f"{node.host}:{node.port}"


def test_a_wrong_node_answers_moved_to_the_owner(rc):
    name = key("cluster", "moved")
    owner = rc.get_node_from_key(name)
    other = next(node for node in rc.get_primaries() if node.name != owner.name)
    with _node_client(rc, other) as client, pytest.raises(MovedError) as caught:
        client.set(name, 1)
    assert caught.value.slot_id == cluster.key_slot(name)
    assert caught.value.node_addr == (owner.host, owner.port)


def test_multi_key_commands_need_one_slot(rc):
    first, second = key("cluster", "a"), key("cluster", "b")
    assert cluster.key_slot(first) != cluster.key_slot(second)
    owner = rc.get_node_from_key(first)
    with _node_client(rc, owner) as client, pytest.raises(ClusterCrossSlotError):
        client.mget(first, second)
    tagged = [key("cluster", "{cart:1}", part) for part in ("a", "b")]
    assert rc.mset({tagged[0]: 1, tagged[1]: 2}) and rc.mget(tagged) == ["1", "2"]


def test_incr_replicated_waits_for_the_replica(rc):
    name = key("cluster", "replicated")
    with _node_client(rc, rc.get_node_from_key(name)) as primary:
        assert cluster.incr_replicated(primary, name) == (1, 1)
        assert cluster.incr_replicated(primary, name) == (2, 1)


def test_key_distribution_puts_one_tag_on_one_shard(rc):
    frame = experiments.run_key_distribution(rc, users=300)
    plain, tagged = frame.iloc[0], frame.iloc[1]
    assert plain.sum() == tagged.sum() == 300
    assert plain.min() > 60  # spread over all three shards
    assert sorted(tagged) == [0, 0, 300]
    assert all(experiments.distribution_verdicts(frame).values())


def test_key_distribution_verdicts_turn_false_when_degraded(rc):
    too_few = experiments.distribution_verdicts(experiments.run_key_distribution(rc, users=2))
    assert not too_few["without a tag, every shard holds between 25 % and 40 % of the keys"]
    empty_tag = experiments.distribution_verdicts(experiments.run_key_distribution(rc, users=300, tag="{}"))
    assert not empty_tag["with one tag for every user, one shard holds all 300 keys"]  # `{}` hashes the whole key


def test_slot_explorer_describes_a_key_without_ports(rc):
    shards = cluster.shards(rc.get_default_node().redis_connection)
    line = experiments.describe_key(shards, "user:{42}:cart")
    expected_shard = cluster.shard_of(shards, "42")
    assert line == f"slot {cluster.key_slot('42')} of 16384 · hash tag '42' · shard {expected_shard} of 3"
    assert "no hash tag" in experiments.describe_key(shards, "user:42")
    widget = experiments.slot_explorer_widget(rc)
    widget.children[0].value = "{}x"
    assert widget.children[1].value == experiments.describe_key(shards, "{}x")


def test_failover_verdicts_hold_and_the_node_rejoins():
    frame = experiments.run_failover(writes_after=50)
    verdicts = experiments.failover_verdicts(frame)
    assert all(verdicts.values()), verdicts
    plain, patient, with_ids = (frame.iloc[index] for index in range(3))
    assert plain.retried == 0  # the cluster client alone cannot wait a failover out
    assert (frame.acknowledged >= 3 * 50).all() and (frame.acknowledged <= frame.attempted).all()
    assert plain.refused_as_duplicate == patient.refused_as_duplicate == 0  # INCR cannot tell


def test_failover_verdicts_turn_false_when_degraded():
    """The server's default node timeout, a Retry too short, write ids from a clock, no restart."""
    degraded = (experiments.WriterSetup("cluster client + a long Retry", patience=60),
                experiments.WriterSetup("+ a Retry of 1", patience=1),
                experiments.WriterSetup("ids from the clock", patience=60,
                                        write_ids=lambda n: f"write-{int(time.time())}"))
    frame = experiments.run_failover(writes_after=20, restart=False, writers=degraded, node_timeout_ms=15000)
    verdicts = experiments.failover_verdicts(frame)
    assert not any(verdicts.values()), verdicts


def test_lost_and_unacknowledged_tell_a_double_incr_from_a_lost_one(rc):
    """`value - acknowledged` nets a retried INCR applied twice against a lost one; the replies do not."""
    name = key("cluster", "{double}", "counter")
    writer = experiments._Writer(rc, [name], experiments.WriterSetup("probe"))
    rc.set(name, 5)
    writer.acknowledged[name] = [1, 2, 3, 5]  # the reply 4 never came: a retry whose first attempt landed
    assert writer.lost_and_unacknowledged(name) == (0, 1)
    writer.acknowledged[name] = [1, 2, 3, 4, 5, 5, 6]  # 5 came back twice and 6 is gone: two writes lost
    assert writer.lost_and_unacknowledged(name) == (2, 0)
    ids = experiments._Writer(rc, [name + ":ids"], experiments.WriterSetup("ids", write_ids=str))
    rc.sadd(name + ":ids", "1", "2", "9")
    ids.acknowledged[name + ":ids"] = ["1", "2", "2", "3"]  # "2" twice: a colliding id; "3" lost
    assert ids.lost_and_unacknowledged(name + ":ids") == (2, 1)


def test_split_brain_loses_what_the_stalled_primary_acknowledged():
    frame = experiments.run_split_brain(writes=30)
    verdicts = experiments.split_brain_verdicts(frame)
    assert all(verdicts.values()), verdicts
    assert frame.loc["before the stall"].tolist() == [10, 10, 10]
    assert frame.loc["after the takeover"].tolist() == [30, 0, 0]


def test_split_brain_verdicts_turn_false_without_a_takeover():
    frame = experiments.run_split_brain(writes=30, promote=False)
    verdicts = experiments.split_brain_verdicts(frame)
    assert not any(verdicts.values()), verdicts
    assert frame.loc["before the stall", "kept"] == 10


def test_counters_cover_every_shard_twice(rc):
    shards = cluster.shards(rc.get_default_node().redis_connection)
    names = experiments._counters(shards, "probe")
    assert [cluster.shard_of(shards, name) for name in names] == [0, 0, 1, 1, 2, 2]


def test_exercise_checkers_pass_the_references(rc):
    assert evaluate(checkers.check_transaction_keys, rc, reference.transaction_keys).passed
    assert evaluate(checkers.check_key_slot, rc, reference.slot_of).passed


def _names(prefix, user, build):
    return tuple(build(part) for part in ("cart", "orders", "profile"))


@pytest.mark.parametrize("wrong, hint", [
    # no tag: each key hashed whole
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}user:{user}:{part}"), "no hash tag"),
    # tagged by the type of data, not by the user
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}{{{part}}}:{user}"), "hash tags differ"),
    # an empty tag first: the whole key is hashed
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}{{}}{{user:{user}}}:{part}"), "empty tag"),
    # one tag for every user: a hot slot
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}{{users}}:{user}:{part}"), "hot slot"),
    # users bucketed into 8 tags: still a handful of hot slots
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}{{bucket:{user % 8}}}:{user}:{part}"),
     "hot slot"),
    # two users' names collide (user 1 and user 11)
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}{{u{str(user)[-1]}}}:{part}"),
     "same key name"),
    (lambda prefix, user: _names(prefix, user, lambda part: f"{{user:{user}}}:{part}"), "prefix"),
    (lambda prefix, user: f"{prefix}{{user:{user}}}:cart", "must return a tuple"),
    (lambda prefix, user: None, "returned None"),
    (lambda prefix, user: (f"{prefix}{{user:{user}}}:cart", f"{prefix}{{user:{user}}}:orders"), "three key names"),
    (lambda prefix, user: (f"{prefix}{{user:{user}}}",) * 3, "three different"),
    (lambda prefix, user: _names(prefix, user, lambda part: f"{prefix}{{user:{user}}}:{part}".encode()), "must be str"),
])
def test_transaction_keys_checker_fails_wrong_answers(rc, wrong, hint):
    outcome = evaluate(checkers.check_transaction_keys, rc, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_transaction_keys_checker_passes_an_unusual_answer(rc):
    """The tag last, holding the bare id, returned as a list: still one slot per user, users spread out."""
    def tag_at_the_end(prefix, user):
        return [f"{prefix}{part}:{{{user}}}" for part in ("cart", "orders", "profile")]

    assert evaluate(checkers.check_transaction_keys, rc, tag_at_the_end).passed


def _slot(text):
    return cluster.crc16(text.encode()) % cluster.SLOTS


def _last_tag(name):
    start, end = name.rfind("{"), name.rfind("}")
    return _slot(name[start + 1:end] if -1 < start < end - 1 else name)


def _empty_tag_hashes_nothing(name):
    start = name.find("{")
    end = name.find("}", start + 1)
    return _slot(name[start + 1:end] if start != -1 and end != -1 else name)


def _first_non_empty_tag(name):
    """What the course once said: 'the first non-empty {...}'."""
    found = re.search(r"\{([^}]+)\}", name)
    return _slot(found.group(1) if found else name)


def _innermost_pair(name):
    found = re.search(r"\{([^{}]+)\}", name)
    return _slot(found.group(1) if found else name)


def _latin1(name):
    start = name.find("{")
    end = name.find("}", start + 1) if start != -1 else -1
    hashed = name[start + 1:end] if start != -1 and end > start + 1 else name
    return cluster.crc16(hashed.encode("latin-1", errors="replace")) % cluster.SLOTS


@pytest.mark.parametrize("wrong, hint", [
    (lambda name: _slot(name), "hashed the whole key"),
    (_last_tag, "FIRST"),
    (_empty_tag_hashes_nothing, "hash nothing"),
    (_first_non_empty_tag, "does not go on looking"),
    (_innermost_pair, "does not go on looking"),
    (_latin1, "UTF-8"),
    (lambda name: cluster.crc16(name.encode()), "0 to 16383"),
    (lambda name: str(reference.slot_of(name)), "must return the slot"),
    (lambda name: None, "returned None"),
])
def test_key_slot_checker_fails_wrong_answers(rc, wrong, hint):
    outcome = evaluate(checkers.check_key_slot, rc, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_key_slot_checker_fails_borrowed_answers(rc):
    """Asking the server, or reusing redis-py's or the course's slot code, bypasses the exercise."""
    from redis.crc import key_slot as redis_py_key_slot

    for borrowed, hint in [(rc.cluster_keyslot, "redis-py"),
                           (lambda name: redis_py_key_slot(name.encode()), "redis-py"),
                           (cluster.key_slot, "the course's key_slot")]:
        outcome = evaluate(checkers.check_key_slot, rc, borrowed)
        assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_key_slot_checker_passes_an_unusual_answer(rc):
    """A regex for the tag and the standard library's CRC-CCITT (XMODEM), on the key's bytes."""
    def slot_with_regex(key):
        found = re.match(rb"[^{]*\{([^}]+)\}", key.encode())
        return binascii.crc_hqx(found.group(1) if found else key.encode(), 0) % 16384

    assert evaluate(checkers.check_key_slot, rc, slot_with_regex).passed


def test_unsolved_exercises_say_not_solved(rc):
    def stub(*args):
        raise NotImplementedError

    assert evaluate(checkers.check_key_slot, rc, stub).status == "not solved yet"
    assert evaluate(checkers.check_transaction_keys, rc, stub).status == "not solved yet"


def test_a_lost_reply_makes_a_retried_incr_count_twice_and_a_write_id_once():
    frame = experiments.run_lost_reply()
    verdicts = experiments.lost_reply_verdicts(frame)
    assert all(verdicts.values()), verdicts
    assert frame.loc["INCR, retried"].tolist() == [1, 2, 2]
    assert frame.loc["SADD of a write id, retried"].tolist() == [1, 1, 0]


def test_lost_reply_verdicts_turn_false_when_degraded():
    no_stall = experiments.lost_reply_verdicts(experiments.run_lost_reply(stall_s=0))
    assert not no_stall["the retried INCR was applied twice for one write"]  # nothing was retried
    id_per_attempt = experiments.lost_reply_verdicts(experiments.run_lost_reply(id_per_attempt=True))
    assert not id_per_attempt["the retried SADD of one write id was applied once, and the retry was told so"]


def _all_stopped(frame):
    """No server the experiment started is still running (checked by pid and port)."""
    return not any(is_our_server(pid, port) for port, pid in frame.attrs["servers"])


def test_join_migrate_slot_and_settings_on_a_scratch_cluster():
    binary = find_binary()
    with scratch_cluster(binary) as nodes:
        new = start_server(binary, Path(nodes[0].dir).parent, cluster=True)
        nodes.append(new)  # stopped with the others on exit
        cluster.join(nodes[:-1], new)
        assert cluster.cluster_state(new) == "ok"
        with nodes[0].client() as source, new.client() as target:
            tag = next(f"{{m{i}}}" for i in range(1000) if cluster.shards(source)[0].owns(cluster.key_slot(f"m{i}")))
            slot = cluster.key_slot(tag)
            names = [f"{tag}:{i}" for i in range(25)]
            source.mset({name: i for i, name in enumerate(names)})
            batches = []
            assert cluster.migrate_slot(source, target, slot, batch=10, after_batch=lambda: batches.append(1)) == 25
            assert len(batches) == 3  # 10 + 10 + 5 keys
            assert source.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
            target.execute_command("READONLY")
            assert target.mget(names) == [str(i) for i in range(25)]
            with pytest.raises(MovedError) as caught:
                source.get(names[0])
            assert caught.value.node_addr == ("127.0.0.1", new.port)
            owners = {shard.primary for shard in cluster.shards(target) if shard.owns(slot)}
            assert owners == {f"127.0.0.1:{new.port}"}
        cluster.set_on_every_node(nodes[:2], cluster_allow_reads_when_down="yes")
        settings = []
        for node in nodes[:3]:
            with node.client() as client:
                settings.append(client.config_get("cluster-allow-reads-when-down")["cluster-allow-reads-when-down"])
        assert settings == ["yes", "yes", "no"]  # a per-node setting: the third node was not told
        nodes[2].stop()
        assert cluster.cluster_state(nodes[2]) is None
        started = [(node.port, node.pid) for node in nodes]
    assert not any(is_our_server(pid, port) for port, pid in started)


def test_resharding_verdicts_hold_and_no_server_outlives_it():
    frame = experiments.run_resharding()
    verdicts = experiments.resharding_verdicts(frame)
    assert all(verdicts.values()), (verdicts, frame.T, frame.attrs)
    row = frame.iloc[0]
    assert row.keys_before == 16 * 30 and row.acknowledged == row.attempted > 0
    assert row.MOVED_sent >= 1 and row.ASK_sent >= 16
    assert _all_stopped(frame) and len(frame.attrs["servers"]) == 7


@pytest.mark.parametrize("degraded, expected_false", [
    # a client that follows no redirection: the writes met by ASK or MOVED fail
    ({"follow_redirections": False}, {"no write failed"}),
    # the target claims each slot without MIGRATE: the source drops the keys, no ASK window
    ({"migrate_keys": False}, {"the new primary owns", "the servers redirected", "no acknowledged write"}),
    # redis-py 8.1 raises AttributeError on an ASK to a node missing from its map (redis/redis-py#2432)
    ({"introduce": False}, {"no write failed"}),
])
def test_resharding_verdicts_turn_false_when_degraded(degraded, expected_false):
    frame = experiments.run_resharding(**degraded)
    verdicts = experiments.resharding_verdicts(frame)
    false = {claim for claim, holds in verdicts.items() if not holds}
    assert {prefix for prefix in expected_false if any(claim.startswith(prefix) for claim in false)} == expected_false
    assert _all_stopped(frame)
    if "introduce" in degraded:
        assert set(frame.attrs["errors"]) == {"AttributeError"}


def test_manual_failover_graceful_keeps_every_write_forced_loses_the_unreplicated():
    frame = experiments.run_manual_failover(writes=30)
    verdicts = experiments.manual_failover_verdicts(frame)
    assert all(verdicts.values()), verdicts
    assert frame.reset_index().values.tolist() == [["CLUSTER FAILOVER", 30, True, 30, 0],
                                                   ["CLUSTER FAILOVER TAKEOVER", 30, True, 0, 30]]
    assert _all_stopped(frame)


@pytest.mark.parametrize("degraded, expected_false", [
    ({"graceful": "TAKEOVER"}, [True, False]),  # the "graceful" one forced too: it loses the writes
    ({"stall_s": 0}, [True, True]),             # a replica that does not lag: nothing to show
])
def test_manual_failover_verdicts_turn_false_when_degraded(degraded, expected_false):
    frame = experiments.run_manual_failover(writes=30, **degraded)
    verdicts = experiments.manual_failover_verdicts(frame)
    assert [not holds for holds in verdicts.values()] == expected_false, verdicts
    assert _all_stopped(frame)


def test_coverage_outcomes_per_setting():
    frame = experiments.run_coverage()
    verdicts = experiments.coverage_verdicts(frame)
    assert all(verdicts.values()), verdicts
    assert frame.values.tolist() == [
        ["CLUSTERDOWN", "CLUSTERDOWN", "CLUSTERDOWN", "fail"],
        ["answered", "CLUSTERDOWN (read-only)", "MOVED to a node that does not answer", "fail"],
        ["answered", "answered", "MOVED to a node that does not answer", "ok"],
    ]
    assert _all_stopped(frame)


@pytest.mark.parametrize("degraded, expected_false", [
    # nothing stopped: every command is answered
    ({"stop_shard": False}, [True, True, False, True]),
    # the settings set on one node only (not the one asked): it goes on refusing everything
    ({"every_node": False}, [False, True, True, False]),
])
def test_coverage_verdicts_turn_false_when_degraded(degraded, expected_false):
    frame = experiments.run_coverage(**degraded)
    verdicts = experiments.coverage_verdicts(frame)
    assert [not holds for holds in verdicts.values()] == expected_false, verdicts
    assert _all_stopped(frame)
