"""Chapter 06: the session store, the JSON-string layout, the guide's functions, experiments, exercises."""

import hashlib
import itertools
import json
import os
import random
import secrets
import time
import uuid

import pytest
from redis.exceptions import WatchError

from course_lib.concurrency import run_together, wait_for
from course_lib.connection import connect, server_identity
from course_lib.exercises import evaluate
from course_lib.exercises.adversary import Adversary, run_in_processes
from course_lib.exercises import sessions as checkers
from course_lib.exercises.solutions import sessions as solutions
from course_lib.experiments import sessions as experiments
from course_lib.sessions import (SessionStore, guide_create_session, guide_destroy_session, guide_extend_session,
                                 guide_get_session, is_well_formed, load_json_session, new_session_id,
                                 save_json_session, supports_field_ttl)

T0 = 1_700_000_000.0
BAD_IDS = [None, 42, b"A" * 43, "", "x", "A" * 42 + "*", "A" * 42 + " ", "{course}" * 5 + "AAA", "é" * 43, "A" * 44]


@pytest.fixture
def store(r):
    return SessionStore(r, idle_timeout=600, max_lifetime=3600, elevation=300)


# -- ids ------------------------------------------------------------------------------------------

def test_new_session_ids_are_256_random_bits_in_43_url_safe_chars():
    ids = {new_session_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(is_well_formed(i) and len(i) == 43 for i in ids)


@pytest.mark.parametrize("value", BAD_IDS)
def test_malformed_ids_are_recognised(value):
    assert not is_well_formed(value)


# -- the store --------------------------------------------------------------------------------------

@pytest.mark.parametrize("idle, lifetime, elevation", [(0, 10, 1), (10, 0, 1), (10, 10, 0), (-1, 10, 1), (20, 10, 1)])
def test_invalid_timeouts_are_refused(r, idle, lifetime, elevation):
    with pytest.raises(ValueError):
        SessionStore(r, idle, lifetime, elevation)


def test_create_and_get(store, r):
    session_id = store.create("alice", {"cart": "tea"}, now=T0)
    session = store.get(session_id, now=T0 + 1)
    assert (session.id, session.user, session.created, session.deadline) == (session_id, "alice", T0, T0 + 3600)
    assert session.data == {"cart": "tea"} and not session.elevated(T0 + 1)
    assert r.hgetall(store.session_key(session_id)) == {
        "_user": "alice", "_created": str(int(T0 * 1000)), "_deadline": str(int((T0 + 3600) * 1000)),
        "data:cart": "tea"}
    assert 0 < r.pttl(store.session_key(session_id)) <= 600_000


def test_get_restarts_the_idle_timer_in_the_same_round_trip(store, r):
    session_id = store.create("alice", now=T0)
    name = store.session_key(session_id)
    r.pexpire(name, 5_000)  # as if the user had been idle for most of the timeout
    assert store.get(session_id, now=T0 + 100) is not None
    assert r.pttl(name) > 590_000


def test_idle_timer_never_reaches_past_the_deadline(store, r):
    session_id = store.create("alice", now=T0)
    assert store.get(session_id, now=T0 + 3590) is not None
    assert 0 < r.pttl(store.session_key(session_id)) <= 10_000


def test_session_past_its_deadline_is_gone_whatever_the_activity(store, r):
    session_id = store.create("alice", now=T0)
    for minutes in range(5, 60, 5):
        assert store.get(session_id, now=T0 + minutes * 60) is not None
    assert store.get(session_id, now=T0 + 3600) is None
    assert not r.exists(store.session_key(session_id))


def test_idle_session_expires_in_redis(store, r):
    session_id = store.create("alice", now=T0)
    r.pexpire(store.session_key(session_id), 1)
    wait_for(lambda: not r.exists(store.session_key(session_id)), 5, "the session key to expire")
    assert store.get(session_id, now=T0 + 1) is None


@pytest.mark.parametrize("value", BAD_IDS)
def test_bad_ids_are_no_session_never_an_error(store, r, value):
    store.create("alice", now=T0)
    assert store.get(value, now=T0) is None
    assert store.update(value, {"cart": "x"}, now=T0) is False
    assert store.destroy(value) is False
    assert store.rotate(value, now=T0) is None
    assert store.get(new_session_id(), now=T0) is None  # well formed but unknown


def test_update_writes_fields_and_never_creates_a_session(store, r):
    session_id = store.create("alice", {"cart": "tea", "theme": "dark"}, now=T0)
    assert store.update(session_id, {"cart": "tea,jam"}, now=T0 + 1)
    assert store.get(session_id, now=T0 + 2).data == {"cart": "tea,jam", "theme": "dark"}
    unknown = new_session_id()
    assert store.update(unknown, {"cart": "x"}, now=T0) is False
    assert not r.exists(store.session_key(unknown))
    assert store.update(session_id, {"cart": "x"}, now=T0 + 3600) is False
    assert store.update(session_id, {}, now=T0) is False


def test_names_with_spaces_are_refused(store):
    with pytest.raises(ValueError):
        store.create("alice smith", now=T0)
    with pytest.raises(ValueError):
        store.create("alice", {"my cart": "tea"}, now=T0)


def test_destroy_removes_the_session_and_its_index_entry(store, r):
    session_id = store.create("alice", now=T0)
    assert store.destroy(session_id)
    assert store.get(session_id, now=T0) is None and not r.exists(store.index_key("alice"))
    assert store.destroy(session_id) is False


def test_anonymous_sessions_are_not_indexed(store, r):
    session_id = store.create(None, {"cart": "tea"}, now=T0)
    assert store.get(session_id, now=T0).user is None
    assert not list(r.scan_iter(match="course:sessions:user:*"))


def test_rotate_at_login_moves_the_data_to_a_new_id(store, r):
    anonymous = store.create(None, {"cart": "tea"}, now=T0)
    logged_in = store.rotate(anonymous, now=T0 + 60, user="alice")
    assert logged_in != anonymous and store.get(anonymous, now=T0 + 61) is None
    session = store.get(logged_in, now=T0 + 61)
    assert (session.user, session.created, session.deadline) == ("alice", T0 + 60, T0 + 3660)
    assert session.data == {"cart": "tea"}
    assert r.zrange(store.index_key("alice"), 0, -1) == [logged_in]


def test_rotate_at_login_drops_another_users_data_and_keeps_the_users_own(store, r):
    """The documented choice: a login carries an anonymous session's data or the user's own, never another user's."""
    bobs = store.create("bob", {"cart": "bobs-tea"}, now=T0)
    on_bobs_browser = store.rotate(bobs, now=T0 + 1, user="alice")
    assert store.get(on_bobs_browser, now=T0 + 2).data == {}
    assert not r.exists(store.index_key("bob")) or bobs not in r.zrange(store.index_key("bob"), 0, -1)
    alices = store.create("alice", {"theme": "dark"}, now=T0)
    again = store.rotate(alices, now=T0 + 3, user="alice")
    assert store.get(again, now=T0 + 4).data == {"theme": "dark"}


def test_append_adds_to_a_list_field_atomically_and_never_creates_a_session(store, r):
    session_id = store.create(None, now=T0)
    assert store.append(session_id, "cart", "tea", now=T0) == ["tea"]
    results = run_together(lambda slot: store.append(session_id, "cart", f"item{slot}", now=T0), 8, timeout=30,
                           what="appends")
    assert all(results) and sorted(store.get(session_id, now=T0).data["cart"].split(",")) == sorted(
        ["tea", *(f"item{n}" for n in range(8))])
    unknown = new_session_id()
    assert store.append(unknown, "cart", "x", now=T0) is None and not r.exists(store.session_key(unknown))
    assert store.append(session_id, "cart", "x", now=T0 + 3600) is None  # past its deadline
    assert store.append("not-an-id", "cart", "x", now=T0) is None
    with pytest.raises(ValueError):
        store.append(session_id, "cart", "a,b", now=T0)


def test_rotate_to_elevate_keeps_the_lifetime(store, r):
    session_id = store.create("alice", now=T0)
    elevated = store.rotate(session_id, now=T0 + 100, elevate=True)
    session = store.get(elevated, now=T0 + 101)
    assert session.elevated(T0 + 399) and not session.elevated(T0 + 400)
    assert session.deadline == T0 + 3600
    assert r.zrange(store.index_key("alice"), 0, -1) == [elevated]
    assert r.pttl(store.session_key(elevated)) <= 600_000


def test_rotate_of_a_dead_session_gives_none(store, r):
    session_id = store.create("alice", now=T0)
    assert store.rotate(session_id, now=T0 + 3600) is None
    assert store.rotate(new_session_id(), now=T0) is None
    assert not r.exists(store.index_key("alice")) or not r.zcard(store.index_key("alice"))


def test_concurrent_rotations_of_one_id_yield_one_session(store, r):
    session_id = store.create("alice", now=T0)
    results = run_together(lambda _slot: store.rotate(session_id, now=T0 + 1), 8, timeout=30, what="rotations")
    winners = [result for result in results if result is not None]
    assert len(results) == 8 and len(winners) == 1
    assert [s.id for s in store.sessions_of("alice", now=T0 + 2)] == winners


def test_sessions_of_lists_live_sessions_without_sliding_them(store, r):
    first = store.create("alice", now=T0)
    second = store.create("alice", now=T0 + 10)
    store.create("bob", now=T0)
    gone = store.create("alice", now=T0 + 20)
    r.delete(store.session_key(gone))  # expired by idleness: the index still lists it
    r.pexpire(store.session_key(first), 50_000)
    assert [s.id for s in store.sessions_of("alice", now=T0 + 30)] == [first, second]
    assert r.pttl(store.session_key(first)) <= 50_000
    # a missing session's id stays listed until its deadline: it might be a session being created
    assert sorted(r.zrange(store.index_key("alice"), 0, -1)) == sorted([first, second, gone])
    assert [s.id for s in store.sessions_of("alice", now=T0 + 3605)] == [second]  # first is past its deadline
    assert sorted(r.zrange(store.index_key("alice"), 0, -1)) == sorted([second, gone])  # pruned by deadline


def test_sessions_of_never_returns_another_users_session(store, r):
    bobs = store.create("bob", now=T0)
    r.zadd(store.index_key("alice"), {bobs: (T0 + 3600) * 1000})  # a corrupted index
    assert store.sessions_of("alice", now=T0) == []
    assert store.get(bobs, now=T0).user == "bob"


def test_destroy_all_logs_a_user_out_everywhere(store, r):
    mine = [store.create("alice", now=T0 + i) for i in range(3)]
    bobs = store.create("bob", now=T0)
    assert store.destroy_all("alice") == 3
    assert all(store.get(i, now=T0 + 5) is None for i in mine)
    assert not r.exists(store.index_key("alice"))
    assert store.get(bobs, now=T0 + 5).user == "bob"
    assert store.destroy_all("alice") == 0


def test_the_store_works_on_a_cluster(rc):
    store = SessionStore(rc, idle_timeout=600, max_lifetime=3600)
    ids = [store.create("alice", {"n": str(i)}, now=T0 + i) for i in range(4)]
    assert store.update(ids[0], {"n": "x"}, now=T0 + 5)
    rotated = store.rotate(ids[1], now=T0 + 6, elevate=True)
    assert [s.data["n"] for s in store.sessions_of("alice", now=T0 + 7)] == ["x", "1", "2", "3"]
    assert store.get(rotated, now=T0 + 8).elevated(T0 + 8)
    assert store.destroy(ids[2])
    assert store.destroy_all("alice") == 3
    assert all(store.get(i, now=T0 + 9) is None for i in (*ids, rotated))


# -- per-field TTL (HEXPIRE) ---------------------------------------------------------------------------

def test_supports_field_ttl_matches_the_server_version(r):
    engine, version, _ = server_identity(r)
    major_minor = tuple(map(int, version.split(".")[:2]))
    expected = major_minor >= ((9, 0) if engine == "Valkey" else (7, 4))
    probe = "course:sessions:probe"
    assert supports_field_ttl(r, probe) is expected
    assert not r.exists(probe)


# -- the JSON-string layout and the guide's functions ---------------------------------------------------

def test_json_session_is_read_and_slid_by_getex(r):
    name = "course:sessions:json:1"
    save_json_session(r, name, {"user": "alice", "cart": ["tea"]}, idle_timeout=600)
    r.expire(name, 5)
    assert load_json_session(r, name, idle_timeout=600) == {"user": "alice", "cart": ["tea"]}
    assert r.ttl(name) > 590
    assert load_json_session(r, "course:sessions:json:none", 600) is None


def test_guide_sessions_work_but_never_end_while_used(r):
    session_id = guide_create_session(r, "alice", {"role": "user"}, now=T0)
    assert uuid.UUID(session_id).version == 4
    data = guide_get_session(r, session_id)
    assert data == {"userId": "alice", "role": "user", "createdAt": int(T0 * 1000)}
    name = f"course:sessions:guide:{session_id}"
    r.expire(name, 10)
    guide_get_session(r, session_id)
    assert r.ttl(name) <= 10  # reading does not slide the timer: a separate call must
    guide_extend_session(r, session_id)
    assert r.ttl(name) > 86_000  # ...and each extension grants a full day again, without end
    guide_destroy_session(r, session_id)
    assert guide_get_session(r, session_id) is None


# -- experiments ------------------------------------------------------------------------------------

def test_concurrent_updates_keep_every_hash_field(r):
    result = experiments.run_concurrent_updates(r, threads=4, updates=50).set_index("layout")
    assert result.loc["hash (SessionStore.update)", "fields_current"] == 4
    assert result.loc["hash (SessionStore.update)", "stale_fields"] == 0
    assert result["writes"].eq(200).all()
    assert not list(r.scan_iter(match="course:sessions:*"))


def test_lost_update_verdicts_and_their_degraded_setting(r):
    """The notebook's verdicts: with B writing between A's read and write, the hash keeps both changes
    and the JSON string loses one. Degraded (B after A, no interleaving), the JSON string loses nothing:
    the "loses one" verdict turns False, so it measures the interleaving, not a constant."""
    kept = experiments.run_lost_update(r).set_index("layout")["changes_kept"]
    assert kept["hash (SessionStore.update)"] == 2 and kept["JSON string (GET + SET)"] < 2
    calm = experiments.run_lost_update(r, interleave=False).set_index("layout")["changes_kept"]
    assert not calm["JSON string (GET + SET)"] < 2
    assert not list(r.scan_iter(match="course:sessions:*"))


def test_read_cost_getex_beats_get_plus_expire(r):
    cost = experiments.run_read_cost(r, samples=600, rounds=24)
    assert list(cost["round_trips"]) == [2, 1, 1]
    assert experiments.faster_by(cost, "JSON string: GETEX", "guide: GET + EXPIRE", 1.3)  # the notebook's verdict
    assert not list(r.scan_iter(match="course:sessions:*"))


def test_read_cost_verdict_turns_false_when_getex_makes_two_round_trips(r):
    """The degraded setting: a PING before each GETEX (two round trips, like the guide's) is caught."""
    cost = experiments.run_read_cost(r, samples=300, rounds=12, extra_round_trip=("JSON string: GETEX",))
    assert list(cost["round_trips"]) == [2, 2, 1]
    assert not experiments.faster_by(cost, "JSON string: GETEX", "guide: GET + EXPIRE", 1.3)
    assert not list(r.scan_iter(match="course:sessions:*"))


# -- exercises -----------------------------------------------------------------------------------------

# Wrong answers to exercise 1 (ids), each with the phrase of its hint.
COUNTER = itertools.count()
SEEDED_ONCE = random.Random(7)


@pytest.mark.parametrize("wrong, hint", [
    (lambda: hashlib.sha256(str(next(COUNTER)).encode()).hexdigest(), "forked from the same state"),
    (lambda: hashlib.sha256(f"{time.time_ns()}:{os.getpid()}".encode()).hexdigest(), "same clock and process id"),
    (lambda: hashlib.sha256(f"{os.getpid()}:{next(COUNTER)}".encode()).hexdigest(), "forked from the same state"),
    (lambda: "%064x" % SEEDED_ONCE.getrandbits(256), "forked from the same state"),
    (lambda: "%032x" % random.getrandbits(128), "re-seeding Python's `random`"),
    (lambda: str(uuid.uuid4()), "a UUID4 carries 122"),
    (lambda: uuid.uuid1().hex, "bits"),
    (lambda: "same", "repeat"),
    (lambda: secrets.token_hex(16) + ";", "cookie"),
    (lambda: secrets.token_bytes(16), "must return the id as a string"),
    (lambda: None, "returned None"),
    # random-looking, 256 bits long, yet only as guessable as the few random bits hashed
    (lambda: hashlib.sha256(os.urandom(4)).hexdigest(), "only 32 bits from the operating system's random source"),
    # randbelow draws 32 bits, and again when it rejects a draw: the fewest of 3 ids is counted
    (lambda: hashlib.sha256(str(secrets.randbelow(10**9)).encode()).hexdigest(),
     "bits from the operating system's random source"),
], ids=["sha256 of a counter", "sha256 of the time and pid", "sha256 of pid and counter", "a generator seeded once",
        "random.getrandbits", "uuid4: 122 bits", "uuid1", "constant", "cookie-unsafe", "bytes", "no return",
        "sha256 of 4 random bytes", "sha256 of a random number below a billion"])
def test_session_id_checker_fails_each_wrong_answer_with_its_hint(r, wrong, hint):
    outcome = evaluate(checkers.check_session_id, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


@pytest.mark.parametrize("right", [
    solutions.session_id,
    lambda: secrets.token_hex(16),  # exactly 128 bits
    lambda: hashlib.sha256(os.urandom(32)).hexdigest(),  # a hash of OS randomness is still random
    lambda: uuid.uuid4().hex + uuid.uuid4().hex,  # two UUID4s: 244 random bits
    lambda: str(random.SystemRandom().getrandbits(128)),  # decimal digits: about 39 of them, 128 random bits
], ids=["reference", "token_hex(16)", "sha256 of os.urandom", "two uuid4", "SystemRandom, in decimal"])
def test_session_id_checker_passes_correct_answers(r, right):
    assert evaluate(checkers.check_session_id, r, right).passed


# Wrong answers to exercise 3 (log out everywhere).

def index_only(client, prefix, user):
    return client.delete(f"{prefix}user:{user}")


def scan_everything(client, prefix, user):
    names = [n for n in client.scan_iter(match=f"{prefix}session:*") if client.hget(n, "user") == user]
    client.delete(f"{prefix}user:{user}")
    return client.delete(*names) if names else 0


def counts_the_index(client, prefix, user):
    ids = client.smembers(f"{prefix}user:{user}")
    if ids:
        client.delete(*(f"{prefix}session:{i}" for i in ids))
        client.srem(f"{prefix}user:{user}", *ids)
    return len(ids)


def one_round_trip_per_session(client, prefix, user):
    ids = client.smembers(f"{prefix}user:{user}")
    deleted = sum(client.delete(f"{prefix}session:{i}") for i in ids)
    client.delete(f"{prefix}user:{user}")
    return deleted


def read_then_delete_the_index(client, prefix, user):
    index = f"{prefix}user:{user}"
    ids = client.smembers(index)
    if not ids:
        return 0
    with client.pipeline(transaction=True) as pipe:
        deleted, _ = pipe.delete(*(f"{prefix}session:{i}" for i in ids)).delete(index).execute()
    return deleted


def index_entries_first_then_sessions(client, prefix, user):
    index = f"{prefix}user:{user}"
    ids = client.smembers(index)
    if not ids:
        return 0
    client.srem(index, *ids)
    return client.delete(*(f"{prefix}session:{i}" for i in ids))


SCAN_IN_A_SCRIPT = """
local deleted, cursor = 0, '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1] .. 'session:*', 'COUNT', 1000)
  cursor = page[1]
  for _, name in ipairs(page[2]) do
    if redis.call('HGET', name, 'user') == ARGV[2] then deleted = deleted + redis.call('DEL', name) end
  end
until cursor == '0'
redis.call('DEL', KEYS[1])
return deleted
"""


def scan_inside_a_script(client, prefix, user):
    """The index bypassed where the client cannot see it: the script walks the keyspace."""
    return client.eval(SCAN_IN_A_SCRIPT, 1, f"{prefix}user:{user}", prefix, user)


def fails_without_sessions(client, prefix, user):
    ids = client.smembers(f"{prefix}user:{user}")
    with client.pipeline(transaction=True) as pipe:
        deleted, _ = pipe.delete(*(f"{prefix}session:{i}" for i in ids)).srem(f"{prefix}user:{user}", *ids).execute()
    return deleted


@pytest.mark.parametrize("wrong, hint", [
    (index_only, "still exist"),
    (scan_everything, "SCAN or KEYS"),
    (scan_inside_a_script, "SCAN or KEYS"),
    (counts_the_index, "return how many"),
    (one_round_trip_per_session, "one per session"),
    (read_then_delete_the_index, "removing the whole index also removes ids added after you read it"),
    (index_entries_first_then_sessions, "right after round trip 2 of 3 (SREM) and left alice's live sessions"),
    (fails_without_sessions, "a user with no sessions must give 0"),
    (lambda client, prefix, user: solutions.log_out_everywhere(connect(), prefix, user), "not the notebook's `r`"),
], ids=lambda value: getattr(value, "__name__", "hint"))
def test_log_out_everywhere_checker_fails_each_wrong_answer_with_its_hint(r, wrong, hint):
    outcome = evaluate(checkers.check_log_out_everywhere, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


LOG_OUT_SCRIPT = """
local ids = redis.call('SMEMBERS', KEYS[1])
local deleted = 0
for _, id in ipairs(ids) do deleted = deleted + redis.call('DEL', ARGV[1] .. 'session:' .. id) end
redis.call('DEL', KEYS[1])
return deleted
"""


def index_read_with_sscan(client, prefix, user):
    """An unusual right answer: the index read page by page (SSCAN), then one MULTI per page."""
    index, deleted = f"{prefix}user:{user}", 0
    cursor = 0
    while True:
        cursor, ids = client.sscan(index, cursor)
        if ids:
            with client.pipeline(transaction=True) as pipe:
                deleted += pipe.delete(*(f"{prefix}session:{i}" for i in ids)).srem(index, *ids).execute()[0]
        if cursor == 0:
            return deleted


def watch_and_retry(client, prefix, user):
    """An unusual right answer: WATCH the index, delete what it lists and the index in MULTI; a login
    landing meanwhile aborts the EXEC, and the retry includes it."""
    index = f"{prefix}user:{user}"
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(index)
                ids = pipe.smembers(index)
                if not ids:
                    pipe.unwatch()
                    return 0
                pipe.multi()
                pipe.delete(*(f"{prefix}session:{i}" for i in ids))
                pipe.delete(index)
                return pipe.execute()[0]
            except WatchError:
                continue


@pytest.mark.parametrize("right", [
    solutions.log_out_everywhere,
    watch_and_retry,
    # one script: nothing can land between reading and deleting the index (standalone only: the
    # session keys it builds are not declared in KEYS)
    lambda client, prefix, user: client.eval(LOG_OUT_SCRIPT, 1, f"{prefix}user:{user}", prefix),
    index_read_with_sscan,
], ids=["reference: SMEMBERS, then DEL + SREM of those ids", "WATCH/MULTI, retried", "Lua: read and delete as one",
        "SSCAN pages"])
def test_log_out_everywhere_checker_passes_correct_answers(r, right):
    assert evaluate(checkers.check_log_out_everywhere, r, right).passed


# Wrong answers to exercise 2 (read and slide).

def guide_get_then_expire(client, name, idle):
    raw = client.get(name)
    client.expire(name, idle)
    return None if raw is None else json.loads(raw)


def exists_then_getex(client, name, idle):
    return json.loads(client.getex(name, ex=idle)) if client.exists(name) else None


@pytest.mark.parametrize("wrong, hint", [
    (guide_get_then_expire, "took 2 round trips (GET | EXPIRE)"),
    (exists_then_getex, "took 2 round trips"),
    (lambda client, name, idle: json.loads(client.get(name)) if client.exists(name) else None, "TTL"),
    (lambda client, name, idle: client.getex(name, ex=idle), "parsed, as a dict"),
    (lambda client, name, idle: json.loads(client.getex(name, ex=1800) or "null"), "(1234 s in this check)"),
    (lambda client, name, idle: json.loads(client.getex(name, px=idle) or "null"), "restart it at `idle`"),
    (lambda client, name, idle: client.getex(name, ex=idle) and None, "returned None"),
    (lambda client, name, idle: solutions.sliding_read(connect(), name, idle), "not the notebook's `r`"),
], ids=["guide: GET + EXPIRE", "EXISTS + GETEX", "no slide", "JSON not parsed", "fixed idle", "ms for s",
        "no return", "the notebook's r"])
def test_sliding_read_checker_fails_each_wrong_answer_with_its_hint(r, wrong, hint):
    outcome = evaluate(checkers.check_sliding_read, r, wrong)
    assert outcome.status == "failed" and hint in outcome.hint, outcome


def multi_get_and_expire(client, name, idle):
    with client.pipeline(transaction=True) as pipe:
        raw, _ = pipe.get(name).expire(name, idle).execute()
    return None if raw is None else json.loads(raw)


@pytest.mark.parametrize("right", [solutions.sliding_read, multi_get_and_expire],
                         ids=["reference: GETEX", "GET + EXPIRE in one MULTI"])
def test_sliding_read_checker_passes_correct_answers(r, right):
    assert evaluate(checkers.check_sliding_read, r, right).passed


def test_unsolved_exercises_say_so(r):
    def stub(*args):
        raise NotImplementedError

    for checker in (checkers.check_session_id, checkers.check_log_out_everywhere, checkers.check_sliding_read):
        assert evaluate(checker, r, stub).status == "not solved yet"


# -- log out everywhere while other app servers log in and list (the orphaned-session bug) ----------

USERS = ("u0", "u1", "u2")


def _creator_or_lister(slot: int) -> int:
    """Runs in its own process: even slots log users in (half by rotating an anonymous session),
    odd slots list the same users' sessions as fast as they can."""
    client = connect()
    store = SessionStore(client, idle_timeout=600, max_lifetime=3600)
    try:
        for n in range(120):
            user = USERS[n % len(USERS)]
            if slot % 2 == 0:
                anonymous = store.create(None, {"cart": "tea"}) if n % 2 else None
                store.rotate(anonymous, user=user) if anonymous else store.create(user)
            else:
                store.sessions_of(user)
        return 0
    finally:
        client.close()


def test_no_interleaving_of_logins_and_listings_orphans_a_session(r):
    run_in_processes(_creator_or_lister, processes=4, timeout=60)
    store = SessionStore(r, idle_timeout=600, max_lifetime=3600)
    assert sum(store.destroy_all(user) for user in USERS) == 2 * 120
    assert list(r.scan_iter(match=store.session_key("*"))) == []  # logged out everywhere: none survived


def test_a_listing_between_the_index_entry_and_the_session_keeps_the_entry(r):
    """The exact interleaving: another app server lists alice's sessions right after this one has
    added the new id to her index, before it has written the session."""
    with Adversary(r) as adversary:
        store = SessionStore(adversary.client, idle_timeout=600, max_lifetime=3600)
        listing = adversary.after(store.index_key("alice"), lambda other: SessionStore(other).sessions_of("alice"))
        session_id = store.create("alice")
        assert listing.fired and listing.result == []  # it saw the id, but no session yet
    assert SessionStore(r).destroy_all("alice") == 1 and not r.exists(SessionStore.session_key(session_id))
