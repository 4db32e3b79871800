"""Chapter 03: publishing, the bounded Subscriber, fan-out, what is lost, sharded Pub/Sub, experiments, exercises."""

import json
import re

import pytest
import redis
from redis.exceptions import RedisClusterException

from course_lib.connection import connect
from course_lib.exercises import evaluate
from course_lib.exercises import pubsub as checkers
from course_lib.exercises.solutions import pubsub as solutions
from course_lib.experiments import pubsub as experiments
from course_lib.keys import key
from course_lib.pubsub import Message, Subscriber, deliver_to_rooms, publish_event, publish_logged
from course_lib.servers import wait_for

CHANNEL = key("pubsub", "test")


def test_publish_with_nobody_listening_reaches_nobody(r):
    assert publish_event(r, CHANNEL, {"type": "order_completed"}) == 0


def test_every_subscriber_gets_the_json_event(r):
    with Subscriber(r, channels=[CHANNEL]) as one, Subscriber(r, channels=[CHANNEL]) as two:
        assert publish_event(r, CHANNEL, {"type": "order_completed", "orderId": 42}) == 2
        got = [one.get(timeout=2.0), two.get(timeout=2.0)]
    assert got[0] == got[1] == Message(CHANNEL, None, '{"orderId": 42, "type": "order_completed"}')
    assert got[0].event() == {"type": "order_completed", "orderId": 42}


def test_subscriptions_are_confirmed_on_entry_and_gone_after_exit(r):
    with Subscriber(r, channels=[CHANNEL], patterns=[key("pubsub", "orders.*")]):
        assert r.pubsub_numsub(CHANNEL) == [(CHANNEL, 1)]
        assert r.pubsub_channels(key("pubsub", "*")) == [CHANNEL]
        assert r.pubsub_numpat() >= 1
    wait_for(lambda: r.pubsub_numsub(CHANNEL) == [(CHANNEL, 0)], 5, "the subscriber's connection to close")


def test_a_pattern_delivers_with_the_pattern_that_matched(r):
    with Subscriber(r, patterns=[key("pubsub", "orders.*")]) as orders:
        assert r.publish(key("pubsub", "users.created"), "no") == 0
        assert r.publish(key("pubsub", "orders.paid"), "yes") == 1
        expected = Message(key("pubsub", "orders.paid"), key("pubsub", "orders.*"), "yes")
        assert orders.receive(2, timeout=0.2) == [expected]


def test_channel_and_matching_pattern_on_one_connection_count_twice(r):
    with Subscriber(r, channels=[CHANNEL], patterns=[key("pubsub", "*")]) as both:
        assert r.publish(CHANNEL, "x") == 2
        assert len(both.receive(2, timeout=2.0)) == 2


def test_waits_are_bounded(r):
    with Subscriber(r, channels=[CHANNEL]) as quiet:
        assert quiet.get(timeout=0.05) is None
        r.publish(CHANNEL, "only one")
        assert [m.data for m in quiet.receive(3, timeout=0.2)] == ["only one"]


def test_subscriber_needs_something_and_does_not_mix_sharded_with_classic(r):
    with pytest.raises(ValueError):
        Subscriber(r)
    with pytest.raises(ValueError):
        Subscriber(r, channels=[CHANNEL], sharded=[CHANNEL])


def test_a_subscribed_resp2_connection_refuses_other_commands(r):
    port = r.connection_pool.connection_kwargs["port"]
    with redis.Redis(port=port, protocol=2, decode_responses=True, single_connection_client=True) as raw:
        raw.execute_command("SUBSCRIBE", CHANNEL)
        with pytest.raises(redis.ResponseError, match="only .*SUBSCRIBE.* are allowed in this context"):
            raw.get(key("pubsub", "anything"))


def test_messages_published_while_a_subscriber_is_away_are_never_replayed(r):
    with Subscriber(r, channels=[CHANNEL]) as before:
        assert r.publish(CHANNEL, "1") == 1
        assert before.get(timeout=2.0).data == "1"
    wait_for(lambda: r.pubsub_numsub(CHANNEL) == [(CHANNEL, 0)], 5, "the subscriber to disconnect")
    assert [r.publish(CHANNEL, str(n)) for n in (2, 3)] == [0, 0]
    with Subscriber(r, channels=[CHANNEL]) as after:
        r.publish(CHANNEL, "4")
        assert [m.data for m in after.receive(3, timeout=0.2)] == ["4"]


def test_publish_logged_keeps_what_nobody_heard(r):
    stream = key("pubsub", "log")
    assert publish_logged(r, CHANNEL, stream, {"n": 1})[0] == 0
    with Subscriber(r, channels=[CHANNEL]) as live:
        receivers, entry_id = publish_logged(r, CHANNEL, stream, {"n": 2})
        assert receivers == 1 and live.get(timeout=2.0).event() == {"n": 2}
    entries = r.xrange(stream)
    assert [json.loads(fields["event"]) for _id, fields in entries] == [{"n": 1}, {"n": 2}]
    assert entries[-1][0] == entry_id


def test_publish_logged_is_standalone_only(rc):
    with pytest.raises(RedisClusterException, match="publish is blocked"):
        publish_logged(rc, CHANNEL, key("pubsub", "log"), {"n": 1})


def test_deliver_to_rooms_keeps_only_local_rooms():
    messages = [Message("c", None, json.dumps({"room": room, "text": room})) for room in ("a", "b", "c")]
    assert deliver_to_rooms(messages, {"a", "c"}) == [{"room": "a", "text": "a"}, {"room": "c", "text": "c"}]
    assert deliver_to_rooms(messages, set()) == []


# -- cluster --------------------------------------------------------------------------------------

def _node_client(node):
    return redis.Redis(host=node.host, port=node.port, decode_responses=True)


def test_sharded_subscriber_on_a_cluster(rc):
    channel = key("pubsub", "shard", "orders")
    with Subscriber(rc, sharded=[channel]) as shard:
        assert rc.spublish(channel, "one") == 1
        assert shard.get(timeout=2.0) == Message(channel, None, "one")
    with _node_client(rc.get_node_from_key(channel)) as owner:
        wait_for(lambda: owner.pubsub_shardnumsub(channel) == [(channel, 0)], 5, "the shard subscriber to close")


def test_spublish_lives_on_the_owner_and_is_moved_elsewhere(rc):
    channel = key("pubsub", "shard", "orders")
    owner = rc.get_node_from_key(channel)
    others = [node for node in rc.get_primaries() if node.name != owner.name]
    with Subscriber(rc, sharded=[channel]):
        with _node_client(owner) as on_owner:
            assert on_owner.pubsub_shardnumsub(channel) == [(channel, 1)]
        for node in others:
            with _node_client(node) as elsewhere:
                with pytest.raises(redis.exceptions.MovedError, match=f"^{rc.keyslot(channel)} "):
                    elsewhere.execute_command("SPUBLISH", channel, "x")


def test_classic_publish_on_a_cluster_reaches_every_node_but_counts_local_receivers(rc):
    primaries = rc.get_primaries()
    clients = [_node_client(node) for node in primaries]
    try:
        with Subscriber(clients[0], channels=[CHANNEL]) as a, Subscriber(clients[1], channels=[CHANNEL]) as b, \
                Subscriber(clients[2], channels=[CHANNEL]) as c:
            assert clients[0].publish(CHANNEL, "everywhere") == 1
            assert [s.get(timeout=5.0).data for s in (a, b, c)] == ["everywhere"] * 3
    finally:
        for client in clients:
            client.close()


# -- experiments ------------------------------------------------------------------------------------

def test_fan_out_every_server_receives_everything_and_delivers_its_rooms(r):
    events = [{"room": "lobby", "user": "ann", "text": "hi"}, {"room": "sales", "user": "bob", "text": "deal"}]
    frame = experiments.run_fan_out(r, {"app-1": {"lobby"}, "app-2": {"sales", "lobby"}, "app-3": set()}, events)
    assert frame["received"].tolist() == [2, 2, 2]
    assert frame["delivered"].tolist() == [1, 2, 0]
    assert frame.loc["app-2", "texts"] == ["deal", "hi"]


def test_delivery_latency_to_three_subscribers_is_well_under_5_ms(r):
    frame = experiments.run_delivery_latency(r, subscribers=3, samples=100)
    assert frame.loc[0, "median_ms"] < 5


def test_a_subscriber_that_never_reads_is_disconnected_past_the_limit():
    row = experiments.run_slow_subscriber().iloc[0]
    assert row["listed before"] and row["dropped"] and not row["listed after"]
    assert row["messages published"] < 5000


def test_the_default_32mb_limit_keeps_it_for_the_same_few_megabytes():
    row = experiments.run_slow_subscriber(limit="pubsub 32mb 8mb 60", max_messages=1500).iloc[0]
    assert row["listed before"] and not row["dropped"] and row["listed after"]


@pytest.mark.parametrize("channel, receivers, got", [
    ("orders.created", 3, ["orders.*", "orders.created", "*.created"]),
    ("orders.paid", 1, ["orders.*", "-", "-"]),
    ("users.created", 1, ["-", "-", "*.created"]),
    ("users.deleted", 0, ["-", "-", "-"]),
])
def test_playground(r, channel, receivers, got):
    frame = experiments.run_playground(r, channel)
    assert frame.attrs["receivers"] == receivers
    assert frame["got"].tolist() == got


def test_playground_widget_starts_deterministic_and_publishes_on_click(r):
    widget = experiments.playground_widget(r)
    (channel, button), status, _output = widget.children[0].children, widget.children[1], widget.children[2]
    assert status.value.endswith("Pick a channel and press Publish.")
    channel.value = "orders.paid"
    button.click()
    assert status.value == f"PUBLISH {experiments.PLAY}:orders.paid -> 1 receivers"


# -- exercises --------------------------------------------------------------------------------------

def _room_json(room, user, text, **extra):
    return json.dumps({"room": room, "user": user, "text": text, **extra})


def test_room_message_checker_accepts_the_solution(r):
    assert evaluate(checkers.check_room_message, r, solutions.room_message).passed


def test_room_message_checker_accepts_an_unusual_correct_answer(r):
    def raw_command_in_a_pipeline(client, channel, room, user, text):
        with client.pipeline(transaction=False) as pipe:
            pipe.execute_command("PUBLISH", channel, json.dumps({"text": text, "user": user, "room": room},
                                                                ensure_ascii=False, separators=(",", ":")))
            (receivers,) = pipe.execute()
        return receivers
    assert evaluate(checkers.check_room_message, r, raw_command_in_a_pipeline).passed


@pytest.mark.parametrize("wrong, hint", [
    (lambda client, channel, room, user, text: client.publish(channel, str({"room": room, "user": user, "text": text})),
     "not JSON"),
    (lambda client, channel, room, user, text: client.publish(
        channel, f'{{"room": "{room}", "user": "{user}", "text": "{text}"}}'), "not JSON"),
    (lambda client, channel, room, user, text: client.publish(channel + ":" + room, _room_json(room, user, text)),
     "exactly the `channel` argument"),
    (lambda client, channel, room, user, text: bool(client.publish(channel, _room_json(room, user, text))),
     "it must return"),
    (lambda client, channel, room, user, text: client.publish(channel, json.dumps({"user": user, "text": text})),
     "room, user and text"),
    (lambda client, channel, room, user, text: client.publish(channel, _room_json(room, user, text, ts=1)),
     "and nothing else"),
    (lambda client, channel, room, user, text: [client.publish(channel, _room_json(room, user, text))
                                                for _ in range(2)][-1], "publish it once"),
    (lambda client, channel, room, user, text: client.publish(channel, _room_json(room, user, text)) and
     client.pubsub_numsub(channel)[0][1], "not a count of your own"),
    (lambda client, channel, room, user, text: (client.publish(channel, _room_json(room, user, text)), 3)[1],
     "with nobody subscribed"),
    (lambda client, channel, room, user, text: client.publish(channel, _room_json(room, user, text)) and None,
     "returned None"),
    (lambda client, channel, room, user, text: connect().publish(channel, _room_json(room, user, text)),
     "not the notebook's `r`"),
])
def test_room_message_checker_rejects_wrong_answers(r, wrong, hint):
    outcome = evaluate(checkers.check_room_message, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_order_pattern_checker_accepts_the_solution(r):
    assert evaluate(checkers.check_order_pattern, r, solutions.order_pattern).passed


def test_order_pattern_checker_accepts_an_unusual_correct_answer(r):
    # re.escape puts a backslash before every glob character; `?*` asks for a non-empty event name
    assert evaluate(checkers.check_order_pattern, r, lambda prefix: re.escape(prefix) + "orders.?*").passed


@pytest.mark.parametrize("wrong, hint", [
    (lambda prefix: "orders.*", "missed"),
    (lambda prefix: prefix + "orders*", "also received"),
    (lambda prefix: prefix + "*", "also received"),
    (lambda prefix: "*orders.*", "also received"),
    (lambda prefix: prefix + "orders.?????", "missed"),
    (lambda prefix: prefix + "orders.*", "glob characters"),
    (lambda prefix: prefix.replace("?", "\\?") + "orders.*", "glob characters"),
    (lambda prefix: [prefix + "orders.*"], "must return the pattern as a string"),
    (lambda prefix: None, "returned None"),
    (lambda prefix: "", "empty string"),
])
def test_order_pattern_checker_rejects_wrong_answers(r, wrong, hint):
    outcome = evaluate(checkers.check_order_pattern, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_unsolved_exercises_say_not_solved_yet(r):
    def stub(*_args):
        raise NotImplementedError

    for checker in (checkers.check_room_message, checkers.check_order_pattern):
        assert evaluate(checker, r, stub).status == "not solved yet"
