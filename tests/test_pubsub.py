"""Chapter 03: publishing, the bounded Subscriber, fan-out, what is lost, sharded Pub/Sub, experiments, exercises."""

import asyncio
import glob
import json
import re
import threading

import pytest
import redis

from course_lib.concurrency import wait_for
from course_lib.connection import connect, credentials
from course_lib.exercises import evaluate
from course_lib.exercises import pubsub as checkers
from course_lib.exercises.solutions import pubsub as solutions
from course_lib.experiments import pubsub as experiments
from course_lib.keys import key
from course_lib.pipelines import async_client
from course_lib.pubsub import (LogFollower, Message, Subscriber, deliver_to_rooms, handler_thread, keyevent_channel,
                               listen_async, publish_event, publish_logged)

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


def test_numpat_counts_patterns_not_subscriptions(r):
    pattern = key("pubsub", "numpat.*")
    before = r.pubsub_numpat()
    with Subscriber(r, patterns=[pattern]), Subscriber(r, patterns=[pattern]):
        assert r.pubsub_numpat() - before == 1  # two clients, one pattern
        with Subscriber(r, patterns=[pattern + ".x"]):
            assert r.pubsub_numpat() - before == 2


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
    with redis.Redis(port=port, protocol=2, decode_responses=True, single_connection_client=True,
                     **credentials(r)) as raw:
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


def test_publish_logged_keeps_what_nobody_heard_and_publishes_the_entry_id(r):
    stream = key("pubsub", "log")
    assert publish_logged(r, CHANNEL, stream, {"n": 1})[0] == 0
    with Subscriber(r, channels=[CHANNEL]) as live:
        receivers, entry_id = publish_logged(r, CHANNEL, stream, {"n": 2})
        assert receivers == 1 and live.get(timeout=2.0).event() == {"id": entry_id, "event": {"n": 2}}
    entries = r.xrange(stream)
    assert [json.loads(fields["event"]) for _id, fields in entries] == [{"n": 1}, {"n": 2}]
    assert entries[-1][0] == entry_id


def test_publish_logged_works_on_a_cluster_and_reaches_every_node(rc):
    stream = key("pubsub", "{log}")
    clients = [_node_client(rc, node) for node in rc.get_primaries()]
    try:
        with Subscriber(clients[0], channels=[CHANNEL]) as a, Subscriber(clients[2], channels=[CHANNEL]) as b:
            _receivers, entry_id = publish_logged(rc, CHANNEL, stream, {"n": 1})
            assert [s.get(timeout=5.0).event()["id"] for s in (a, b)] == [entry_id, entry_id]
    finally:
        for client in clients:
            client.close()
    assert rc.xlen(stream) == 1


def _drop_connection(r, name):
    """Close the named client's connection from the server side, as a network failure would."""
    (victim,) = [entry for entry in r.client_list(_type="pubsub") if entry["name"] == name]
    r.client_kill_filter(_id=victim["id"])


def test_a_follower_whose_connection_really_drops_recovers_every_event_once(r):
    stream, name = key("pubsub", "log"), key("pubsub", "follower")
    follower_client = connect(client_name=name)
    try:
        with LogFollower(follower_client, CHANNEL, stream) as follower:
            assert follower.catch_up() == []  # nothing logged yet: what follows comes live
            publish_logged(r, CHANNEL, stream, {"n": 1})
            assert [event["n"] for _, event in follower.receive(1, timeout=2.0)] == [1]
            _drop_connection(r, name)
            assert [publish_logged(r, CHANNEL, stream, {"n": n})[0] for n in (2, 3, 4)] == [0, 0, 0]  # nobody
            assert [event["n"] for _, event in follower.receive(3, timeout=5.0)] == [2, 3, 4]  # from the stream
            assert follower.subscriber.resubscribed == 1  # redis-py reconnected and subscribed again
            publish_logged(r, CHANNEL, stream, {"n": 5})
            assert [event["n"] for _, event in follower.receive(1, timeout=2.0)] == [5]  # live again
            assert follower.duplicates == 0 and follower.last_id == r.xrevrange(stream, count=1)[0][0]
    finally:
        follower_client.close()


def test_events_in_the_gap_between_subscribing_and_reading_arrive_twice_and_count_once(r):
    stream = key("pubsub", "log")
    last_id = publish_logged(r, CHANNEL, stream, {"n": 1})[1]  # processed before a restart
    with LogFollower(r, CHANNEL, stream, last_id=last_id) as restarted:
        for n in (2, 3):
            publish_logged(r, CHANNEL, stream, {"n": n})  # subscribed, stream not read yet
        assert [event["n"] for _, event in restarted.catch_up()] == [2, 3]
        assert restarted.receive(2, timeout=0.3) == [] and restarted.duplicates == 2


def test_a_follower_reads_a_long_absence_page_by_page(r):
    stream = key("pubsub", "log")
    for n in range(25):
        publish_logged(r, CHANNEL, stream, {"n": n})
    with LogFollower(r, CHANNEL, stream, page=10) as follower:
        assert [event["n"] for _, event in follower.receive(25, timeout=2.0)] == list(range(25))


def test_deliver_to_rooms_keeps_only_local_rooms():
    messages = [Message("c", None, json.dumps({"room": room, "text": room})) for room in ("a", "b", "c")]
    assert deliver_to_rooms(messages, {"a", "c"}) == [{"room": "a", "text": "a"}, {"room": "c", "text": "c"}]
    assert deliver_to_rooms(messages, set()) == []


# -- cluster --------------------------------------------------------------------------------------

def _node_client(rc, node):
    return redis.Redis(host=node.host, port=node.port, decode_responses=True, **credentials(rc))


def test_sharded_subscriber_on_a_cluster(rc):
    channel = key("pubsub", "shard", "orders")
    with Subscriber(rc, sharded=[channel]) as shard:
        assert rc.spublish(channel, "one") == 1
        assert shard.get(timeout=2.0) == Message(channel, None, "one")
    with _node_client(rc, rc.get_node_from_key(channel)) as owner:
        wait_for(lambda: owner.pubsub_shardnumsub(channel) == [(channel, 0)], 5, "the shard subscriber to close")


def test_spublish_lives_on_the_owner_and_is_moved_elsewhere(rc):
    channel = key("pubsub", "shard", "orders")
    owner = rc.get_node_from_key(channel)
    others = [node for node in rc.get_primaries() if node.name != owner.name]
    with Subscriber(rc, sharded=[channel]):
        with _node_client(rc, owner) as on_owner:
            assert on_owner.pubsub_shardnumsub(channel) == [(channel, 1)]
        for node in others:
            with _node_client(rc, node) as elsewhere:
                with pytest.raises(redis.exceptions.MovedError, match=f"^{rc.keyslot(channel)} "):
                    elsewhere.execute_command("SPUBLISH", channel, "x")


def test_classic_publish_on_a_cluster_reaches_every_node_but_counts_local_receivers(rc):
    primaries = rc.get_primaries()
    clients = [_node_client(rc, node) for node in primaries]
    try:
        with Subscriber(clients[0], channels=[CHANNEL]) as a, Subscriber(clients[1], channels=[CHANNEL]) as b, \
                Subscriber(clients[2], channels=[CHANNEL]) as c:
            assert clients[0].publish(CHANNEL, "everywhere") == 1
            assert [s.get(timeout=5.0).data for s in (a, b, c)] == ["everywhere"] * 3
    finally:
        for client in clients:
            client.close()


def test_handler_thread_calls_the_handler_for_every_message_and_is_joined_on_exit(r):
    got, all_in = [], threading.Event()

    def on_message(message):
        got.append(message["data"])
        if len(got) == 3:
            all_in.set()

    with handler_thread(r, {CHANNEL: on_message}) as thread:
        assert [r.publish(CHANNEL, f"m{n}") for n in range(3)] == [1, 1, 1]  # confirmed before the thread ran
        assert all_in.wait(5.0)
    assert not thread.is_alive() and got == ["m0", "m1", "m2"]
    wait_for(lambda: r.pubsub_numsub(CHANNEL) == [(CHANNEL, 0)], 5, "the thread's connection to close")


def test_asyncio_subscribers_each_receive_every_message_and_close(r):
    async def scenario():
        aclient = async_client(r)
        try:
            readies = [asyncio.Event() for _ in range(3)]
            listeners = [asyncio.create_task(listen_async(aclient, [CHANNEL], 4, 5.0, ready)) for ready in readies]
            await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 5.0)
            counts = [await aclient.publish(CHANNEL, f"m{n}") for n in range(4)]
            return counts, await asyncio.gather(*listeners)
        finally:
            await aclient.aclose()
            await aclient.connection_pool.disconnect()

    counts, received = asyncio.run(scenario())
    assert counts == [3, 3, 3, 3]
    assert [[m.data for m in messages] for messages in received] == [["m0", "m1", "m2", "m3"]] * 3
    wait_for(lambda: r.pubsub_numsub(CHANNEL) == [(CHANNEL, 0)], 5, "the asyncio subscribers to close")


def test_an_asyncio_wait_is_bounded(r):
    async def scenario():
        aclient = async_client(r)
        try:
            return await listen_async(aclient, [CHANNEL], 1, 0.2)
        finally:
            await aclient.aclose()
            await aclient.connection_pool.disconnect()

    assert asyncio.run(scenario()) == []


def test_keyevent_channel_names():
    assert keyevent_channel("expired") == "__keyevent@0__:expired"
    assert keyevent_channel("del", db=3) == "__keyevent@3__:del"


# -- experiments ------------------------------------------------------------------------------------

FAN_OUT_EVENTS = [{"room": "lobby", "user": "ann", "text": "hi"}, {"room": "sales", "user": "bob", "text": "deal"},
                  {"room": "lobby", "user": "cy", "text": "coffee?"}, {"room": "sales", "user": "dee", "text": "won"}]
FAN_OUT_ROOMS = {"app-1": {"lobby"}, "app-2": {"sales", "lobby"}, "app-3": set()}


def test_fan_out_every_server_receives_everything_and_delivers_its_rooms(r):
    frame = experiments.run_fan_out(r, FAN_OUT_ROOMS, FAN_OUT_EVENTS)
    assert (frame["received"] == len(FAN_OUT_EVENTS)).all()  # the notebook's verdict
    assert frame["delivered"].tolist() == [2, 4, 0]
    assert frame.loc["app-2", "texts"] == ["coffee?", "deal", "hi", "won"]


def test_fan_out_verdict_fails_for_a_server_that_subscribes_during_the_traffic(r):
    frame = experiments.run_fan_out(r, FAN_OUT_ROOMS, FAN_OUT_EVENTS, late=("app-2",))
    assert frame["received"].tolist() == [4, 2, 4]  # the first half is gone for good
    assert not (frame["received"] == len(FAN_OUT_EVENTS)).all()


def test_delivery_latency_to_three_subscribers_is_under_a_millisecond(r):
    frame = experiments.run_delivery_latency(r, subscribers=3, samples=200)
    assert frame.loc[0, "median_ms"] < 1  # the notebook's verdict


def test_delivery_latency_verdict_fails_with_a_subscriber_per_user(r):
    frame = experiments.run_delivery_latency(r, subscribers=60, samples=20)
    assert not frame.loc[0, "median_ms"] < 1


def test_a_subscriber_that_never_reads_is_disconnected_at_its_limit():
    row = experiments.run_slow_subscriber().iloc[0]
    assert row["listed before"] and row["dropped"] and not row["listed after"]
    assert experiments.closed_at_its_limit(row)


def test_an_8mb_limit_is_reached_and_enforced_too():
    row = experiments.run_slow_subscriber(limit="pubsub 8mb 4mb 60").iloc[0]
    assert experiments.closed_at_its_limit(row) and row["hard limit MB"] == 8


@pytest.mark.parametrize("limit, max_messages", [
    ("pubsub 8mb 4mb 60", 1000),  # the old control: about 4 MB of traffic never reaches an 8 MB limit
    ("pubsub 0 0 0", 1500),       # no limit at all: nothing is ever closed
])
def test_slow_subscriber_verdict_fails_when_the_limit_is_not_reached_or_not_set(limit, max_messages):
    row = experiments.run_slow_subscriber(limit=limit, max_messages=max_messages).iloc[0]
    assert not experiments.closed_at_its_limit(row) and row["listed after"]


def test_an_expired_event_comes_only_when_a_read_touches_the_key_without_active_expiry():
    row = experiments.run_expired_event(active_expiry=False).iloc[0]
    assert experiments.came_only_on_read(row)  # the notebook's verdict


def test_expired_event_verdict_fails_with_active_expiry():
    row = experiments.run_expired_event(active_expiry=True).iloc[0]
    assert row["event before any read"] and row["keys in memory"] == 0  # the background cycle found it
    assert not experiments.came_only_on_read(row)


def test_a_reconnection_loses_exactly_the_messages_published_in_the_gap(r):
    row = experiments.run_reconnect_gap(r, gap=5).iloc[0]
    assert (row["published"], row["received"], row["lost"], row["resubscribed"]) == (10, 5, 5, 1)
    assert experiments.lost_exactly_the_gap(row, gap=5)


def test_reconnect_verdict_fails_when_the_connection_is_not_dropped(r):
    row = experiments.run_reconnect_gap(r, gap=5, drop=False).iloc[0]
    assert row["lost"] == 0 and not experiments.lost_exactly_the_gap(row, gap=5)


def test_an_idle_subscriber_with_a_health_check_pings(r):
    row = experiments.run_health_check(r, interval=0.2).iloc[0]
    assert row["pinged"] and row["last command"] == "ping"


def test_health_check_verdict_fails_without_an_interval(r):
    row = experiments.run_health_check(r, interval=0, idle_for=0.5).iloc[0]
    assert not row["pinged"] and row["last command"] == "subscribe"


def test_a_silently_dead_connection_is_noticed_through_the_health_check_ping(r):
    row = experiments.run_silent_drop(r, interval=0.2).iloc[0]
    assert row["PUBLISH receivers while dead"] == 1  # the server never heard of the drop
    assert row["noticed"] and row["seconds to notice"] < 1 and row["received after"]


def test_silent_drop_verdict_fails_without_a_health_check(r):
    row = experiments.run_silent_drop(r, interval=0, window=0.5).iloc[0]
    assert row["PUBLISH receivers while dead"] == 1 and not row["noticed"] and not row["received after"]


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
    # also announced on a channel of the room's own, outside the checker's prefix
    (lambda client, channel, room, user, text: client.publish(f"chat:{room}", _room_json(room, user, text)) and 0 or
     client.publish(channel, _room_json(room, user, text)), "published on ['chat:lobby']"),
    # a count of its own that happens to be right while every pattern matches: NUMSUB + NUMPAT
    (lambda client, channel, room, user, text: client.publish(channel, _room_json(room, user, text)) * 0 +
     client.pubsub_numsub(channel)[0][1] + client.pubsub_numpat(), "you returned 4"),
])
def test_room_message_checker_rejects_wrong_answers(r, wrong, hint):
    outcome = evaluate(checkers.check_room_message, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_order_pattern_checker_accepts_the_solution(r):
    assert evaluate(checkers.check_order_pattern, r, solutions.order_pattern).passed


@pytest.mark.parametrize("answer", [
    lambda prefix: re.escape(prefix) + "orders.?*",  # a backslash before every glob character; `?*`: non-empty name
    lambda prefix: glob.escape(prefix) + "orders.*",  # Python's glob.escape: `[*]`, `[?]`, `[[]` match themselves
])
def test_order_pattern_checker_accepts_an_unusual_correct_answer(r, answer):
    assert evaluate(checkers.check_order_pattern, r, answer).passed


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
    (lambda prefix: prefix.replace("?", "\\?").replace("*", "\\*").replace("[", "\\[") + "orders.[a-z]*",
     "missed ['course:pubsub:exercise:orders.2FA-sent']: it must start with the prefix"),
])
def test_order_pattern_checker_rejects_wrong_answers(r, wrong, hint):
    outcome = evaluate(checkers.check_order_pattern, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome.hint


def test_unsolved_exercises_say_not_solved_yet(r):
    def stub(*_args):
        raise NotImplementedError

    for checker in (checkers.check_room_message, checkers.check_order_pattern):
        assert evaluate(checker, r, stub).status == "not solved yet"
