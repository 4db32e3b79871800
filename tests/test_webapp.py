"""The web app of chapters 05 and 06, tested over real HTTP: a werkzeug server on a free loopback port."""

import re

import pytest
import requests

from course_lib.exercises.adversary import Adversary
from course_lib.rate_limiting import FixedWindow, SlidingLog
from course_lib.servers import scratch_server
from course_lib.sessions import SessionStore
from course_lib.webapp import COOKIE, create_app, serve

T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand; the app reads it for the limiter and the store."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def set_cookie(response) -> str:
    return response.headers.get("Set-Cookie", "")


def cookie_flags(response) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in set_cookie(response).split(";")[1:]}


# -- rate limiting ------------------------------------------------------------------------------

def test_limited_requests_get_429_json_and_headers(r):
    with serve(create_app(limiter=SlidingLog(r, "http", 3, 60))) as url:
        answers = [requests.get(f"{url}/", timeout=5) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
    assert all(1 <= int(a.headers["X-RateLimit-Reset"]) <= 60 for a in answers)
    denied = answers[-1]
    assert denied.headers["Content-Type"] == "application/json"
    retry = int(denied.headers["Retry-After"])
    assert 1 <= retry <= 60
    assert denied.json() == {"error": "too many requests", "retry_after": retry}
    assert "Retry-After" not in answers[0].headers


def test_headers_are_exact_with_a_fixed_clock(r):
    clock = Clock(T0 + 3)
    with serve(create_app(limiter=FixedWindow(r, "http", 2, 10), clock=clock)) as url:
        first, second, third = (requests.get(f"{url}/", timeout=5) for _ in range(3))
        clock.now = T0 + 10
        fourth = requests.get(f"{url}/", timeout=5)
    assert [first.status_code, second.status_code, third.status_code, fourth.status_code] == [200, 200, 429, 200]
    assert third.headers["Retry-After"] == "7" and third.headers["X-RateLimit-Reset"] == "7"
    assert fourth.headers["X-RateLimit-Remaining"] == "1" and fourth.headers["X-RateLimit-Reset"] == "10"


def test_api_keys_have_their_own_quota(r):
    app = create_app(limiter=SlidingLog(r, "http", 1, 60), api_keys={"k-123": "acme"})
    with serve(app) as url:
        by_ip = [requests.get(f"{url}/", timeout=5).status_code for _ in range(2)]
        by_key = [requests.get(f"{url}/", headers={"X-API-Key": "k-123"}, timeout=5).status_code for _ in range(2)]
        unknown = requests.get(f"{url}/", headers={"X-API-Key": "made-up"}, timeout=5)
    assert by_ip == [200, 429] and by_key == [200, 429]
    assert unknown.status_code == 429  # charged to the address it came from, whose quota is spent
    assert sorted(r.scan_iter(match="course:rate_limiting:{http:*")) == [
        "course:rate_limiting:{http:account:acme}:log", "course:rate_limiting:{http:ip:127.0.0.1}:log"]


def test_unknown_api_keys_are_charged_to_the_address_before_they_are_refused(r):
    """Guessing keys spends the guesser's quota: after 2 guesses (limit 2) the address gets 429s."""
    with serve(create_app(limiter=SlidingLog(r, "http", 2, 60), api_keys={"k-123": "acme"})) as url:
        guesses = [requests.get(f"{url}/", headers={"X-API-Key": f"guess-{n}"}, timeout=5) for n in range(5)]
        plain = requests.get(f"{url}/", timeout=5)
        known = requests.get(f"{url}/", headers={"X-API-Key": "k-123"}, timeout=5)
    assert [g.status_code for g in guesses] == [401, 401, 429, 429, 429]
    assert guesses[0].json() == {"error": "unknown API key"}
    assert plain.status_code == 429 and known.status_code == 200  # the account's own quota is untouched


def test_health_is_never_limited(r):
    with serve(create_app(limiter=SlidingLog(r, "http", 1, 60))) as url:
        answers = [requests.get(f"{url}/health", timeout=5) for _ in range(5)]
    assert all(a.status_code == 200 and "X-RateLimit-Limit" not in a.headers for a in answers)


@pytest.mark.parametrize("trust_proxy, expected", [(False, [200, 429]), (True, [200, 200])])
def test_forwarded_for_counts_only_behind_a_trusted_proxy(r, trust_proxy, expected):
    with serve(create_app(limiter=SlidingLog(r, "http", 1, 60), trust_proxy=trust_proxy)) as url:
        codes = [requests.get(f"{url}/", headers={"X-Forwarded-For": ip}, timeout=5).status_code
                 for ip in ("203.0.113.7", "203.0.113.8")]
    assert codes == expected


def test_behind_a_proxy_only_the_entry_it_appended_counts(r):
    """A client can put anything to the left in X-Forwarded-For; the proxy appends the real address."""
    with serve(create_app(limiter=SlidingLog(r, "http", 1, 60), trust_proxy=True)) as url:
        codes = [requests.get(f"{url}/", headers={"X-Forwarded-For": f"{forged}, 198.51.100.4"}, timeout=5)
                 for forged in ("203.0.113.7", "203.0.113.8")]
    assert [c.status_code for c in codes] == [200, 429]
    assert codes[0].json() == {"hello": "198.51.100.4"}


def test_over_ipv6_loopback_the_limit_is_per_64_network(r):
    """Served on ::1, the app charges the client to its /64 network, and ::1 gets its own quota."""
    app = create_app(limiter=SlidingLog(r, "http", 1, 60))
    with serve(app, host="::1") as url:
        first, second = (requests.get(f"{url}/", timeout=5) for _ in range(2))
    with serve(app) as url:  # 127.0.0.1: a different identity
        over_ipv4 = requests.get(f"{url}/", timeout=5)
    assert url.startswith("http://127.0.0.1:") and first.json() == {"hello": "::1"}
    assert [first.status_code, second.status_code, over_ipv4.status_code] == [200, 429, 200]
    assert sorted(r.scan_iter(match="course:rate_limiting:{http:*")) == [
        "course:rate_limiting:{http:ip:127.0.0.1}:log", "course:rate_limiting:{http:ip:::/64}:log"]


@pytest.mark.parametrize("addresses, expected", [
    (("2001:db8:1:2::7", "2001:db8:1:2:ffff:1:2:3"), [200, 429]),  # one /64: one subscriber, one quota
    (("2001:db8:1:2::7", "2001:db8:1:3::7"), [200, 200]),  # the next /64: someone else
    (("203.0.113.7", "::ffff:203.0.113.7"), [200, 429]),  # IPv4, and the same address mapped into IPv6
    (("203.0.113.7", "203.0.113.8"), [200, 200]),  # IPv4 is limited per address
], ids=["ipv6 same /64", "ipv6 next /64", "ipv4 and ipv4-mapped", "ipv4 neighbours"])
def test_addresses_behind_a_trusted_proxy_are_grouped_as_documented(r, addresses, expected):
    """Over real HTTP, the proxy's X-Forwarded-For carries addresses loopback cannot have."""
    with serve(create_app(limiter=SlidingLog(r, "http", 1, 60), trust_proxy=True)) as url:
        codes = [requests.get(f"{url}/", headers={"X-Forwarded-For": ip}, timeout=5).status_code for ip in addresses]
    assert codes == expected


def test_a_limit_per_ipv6_address_would_be_no_limit(r):
    """The degraded setting: charged per full address, a client rotating through its /64 is never limited."""
    limiter = SlidingLog(r, "http", 1, 60)
    per_address = [limiter.hit(f"ip:2001:db8:1:2::{n:x}", now=T0).allowed for n in range(1, 6)]
    assert per_address == [True] * 5  # what the app would do without the /64 grouping


def test_when_redis_is_down_each_route_fails_open_or_closed_as_documented():
    """A private server is stopped under the running app: / (without a session) is served unlimited
    (fail open), /login and the session routes get 503 with Retry-After (fail closed), /health answers."""
    with scratch_server() as server:
        client = server.client()
        app = create_app(limiter=FixedWindow(client, "http", 100, 60), store=SessionStore(client))
        with serve(app) as url:
            browser = requests.Session()
            assert browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"},
                                timeout=5).status_code == 200
            server.stop()
            hello = requests.get(f"{url}/", timeout=5)  # no cookie: no session to read
            login = browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
            me = browser.get(f"{url}/me", timeout=5)
            cart = browser.post(f"{url}/cart", json={"item": "tea"}, timeout=5)
            health = requests.get(f"{url}/health", timeout=5)
        client.close()
    assert hello.status_code == 200 and "X-RateLimit-Limit" not in hello.headers
    for refused, what in ((login, "rate limiter"), (me, "session store"), (cart, "session store")):
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert refused.json() == {"error": f"{what} unavailable, try again shortly", "retry_after": 5}
    assert health.status_code == 200


def test_server_is_stopped_after_the_block(r):
    with serve(create_app()) as url:
        assert requests.get(f"{url}/health", timeout=5).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)


# -- sessions -----------------------------------------------------------------------------------

def test_two_cart_posts_at_once_both_keep_their_item(r):
    """Deterministic: right after the first POST has read the session, a second POST adds its item."""
    with Adversary(r) as adversary, serve(create_app(store=SessionStore(adversary.client))) as url:
        browser = requests.Session()
        browser.post(f"{url}/cart", json={"item": "tea"}, timeout=5)
        name = SessionStore.session_key(browser.cookies[COOKIE])
        second = adversary.after(name, lambda _other: browser.post(f"{url}/cart", json={"item": "jam"}, timeout=5))
        first = browser.post(f"{url}/cart", json={"item": "honey"}, timeout=5)
        stored = r.hget(name, "data:cart")
    assert second.fired and second.result.json() == {"cart": ["tea", "jam"]}
    assert first.json() == {"cart": ["tea", "jam", "honey"]} and stored == "tea,jam,honey"


def test_cart_reports_only_what_it_stored(r):
    """The session ends between the app's read and its write (its clock passes the deadline): the
    answer must be the cart really stored under the cookie the app sets, not a cart it failed to write."""
    ticks = iter([T0])  # the session is read at T0; every later look at the clock says T0 + 100
    clock = lambda: next(ticks, T0 + 100)  # noqa: E731
    store = SessionStore(r, idle_timeout=60, max_lifetime=100)
    session_id = store.create(None, {"cart": "tea"}, now=T0)
    with serve(create_app(store=store, clock=clock)) as url:
        answer = requests.post(f"{url}/cart", json={"item": "jam"}, cookies={COOKIE: session_id}, timeout=5)
    stored = store.get(answer.cookies.get(COOKIE, session_id), now=T0 + 100)
    assert stored is not None and answer.json()["cart"] == stored.data["cart"].split(",")


def test_login_me_logout_with_a_safe_cookie(r):
    with serve(create_app(store=SessionStore(r))) as url:
        browser = requests.Session()
        wrong = browser.post(f"{url}/login", json={"user": "alice", "password": "guess"}, timeout=5)
        login = browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
        me = browser.get(f"{url}/me", timeout=5)
        logout = browser.post(f"{url}/logout", timeout=5)
        after = browser.get(f"{url}/me", timeout=5)
    assert wrong.status_code == 401 and wrong.json() == {"error": "wrong user or password"} and not set_cookie(wrong)
    assert login.status_code == 200 and login.json() == {"user": "alice"}
    assert re.match(rf"{COOKIE}=[A-Za-z0-9_-]{{43}};", set_cookie(login))
    assert {"httponly", "samesite", "path"} <= cookie_flags(login) and "secure" not in cookie_flags(login)
    assert "SameSite=Lax" in set_cookie(login)
    assert me.json() == {"user": "alice", "elevated": False, "cart": []}
    assert logout.json() == {"logged_out": True} and "Expires=Thu, 01 Jan 1970" in set_cookie(logout)
    assert after.status_code == 401 and after.json() == {"error": "not logged in"}


def test_cookie_is_secure_when_served_over_https(r):
    with serve(create_app(store=SessionStore(r), trust_proxy=True)) as url:
        login = requests.post(f"{url}/login", json={"user": "alice", "password": "wonderland"},
                              headers={"X-Forwarded-Proto": "https"}, timeout=5)
    assert "secure" in cookie_flags(login)


@pytest.mark.parametrize("value", ["", "x", "A" * 43, "A" * 42 + "*", "{course:sessions}", "../../etc", " " * 43,
                                   "é" * 43, "A" * 10_000])
def test_bad_session_cookies_are_no_session(r, value):
    with serve(create_app(store=SessionStore(r))) as url:
        answers = [requests.request(method, f"{url}{path}", cookies={COOKIE: value}, timeout=5)
                   for method, path in (("GET", "/me"), ("GET", "/sessions"), ("POST", "/logout"),
                                        ("POST", "/elevate"), ("GET", "/admin"), ("POST", "/logout-everywhere"))]
    assert [a.status_code for a in answers] == [401, 401, 200, 401, 401, 401]
    assert all(a.headers["Content-Type"] == "application/json" for a in answers)


def test_tampered_id_is_no_session(r):
    with serve(create_app(store=SessionStore(r))) as url:
        login = requests.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
        real = login.cookies[COOKIE]
        tampered = real[:-1] + ("A" if real[-1] != "A" else "B")
        me = requests.get(f"{url}/me", cookies={COOKIE: tampered}, timeout=5)
        still = requests.get(f"{url}/me", cookies={COOKIE: real}, timeout=5)
    assert me.status_code == 401 and still.json()["user"] == "alice"


def test_login_rotates_the_id_and_keeps_the_cart(r):
    """Session fixation: an id handed out before login (or planted by an attacker) is dead after it."""
    with serve(create_app(store=SessionStore(r))) as url:
        browser = requests.Session()
        cart = browser.post(f"{url}/cart", json={"item": "tea"}, timeout=5)
        before = browser.cookies[COOKIE]
        browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
        after = browser.cookies[COOKIE]
        me = browser.get(f"{url}/me", timeout=5)
        planted = requests.get(f"{url}/me", cookies={COOKIE: before}, timeout=5)
    assert cart.json() == {"cart": ["tea"]}
    assert before != after
    assert me.json() == {"user": "alice", "elevated": False, "cart": ["tea"]}
    assert planted.status_code == 401


def test_another_users_session_is_never_carried_over(r):
    with serve(create_app(store=SessionStore(r))) as url:
        browser = requests.Session()
        browser.post(f"{url}/cart", json={"item": "tea"}, timeout=5)
        browser.post(f"{url}/login", json={"user": "bob", "password": "builder"}, timeout=5)
        bobs = browser.cookies[COOKIE]
        browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
        me = browser.get(f"{url}/me", timeout=5)
        bob_again = requests.get(f"{url}/me", cookies={COOKIE: bobs}, timeout=5)
    assert me.json() == {"user": "alice", "elevated": False, "cart": []}
    assert bob_again.status_code == 401  # logging in as someone else ended bob's session in that browser


def test_log_out_everywhere(r):
    with serve(create_app(store=SessionStore(r))) as url:
        laptop, phone, bobs = requests.Session(), requests.Session(), requests.Session()
        for browser, user, password in ((laptop, "alice", "wonderland"), (phone, "alice", "wonderland"),
                                        (bobs, "bob", "builder")):
            browser.post(f"{url}/login", json={"user": user, "password": password}, timeout=5)
        listed = laptop.get(f"{url}/sessions", timeout=5)
        everywhere = laptop.post(f"{url}/logout-everywhere", timeout=5)
        phone_after = phone.get(f"{url}/me", timeout=5)
        laptop_after = laptop.get(f"{url}/me", timeout=5)
        bob_after = bobs.get(f"{url}/me", timeout=5)
    assert listed.json() == {"count": 2, "this_one_included": True}
    assert everywhere.json() == {"destroyed": 2}
    assert phone_after.status_code == 401 and laptop_after.status_code == 401
    assert bob_after.json()["user"] == "bob"


def test_elevation_rotates_the_id_and_expires(r):
    clock = Clock()
    with serve(create_app(store=SessionStore(r, elevation=300), clock=clock)) as url:
        browser = requests.Session()
        browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
        plain = browser.cookies[COOKIE]
        refused = browser.get(f"{url}/admin", timeout=5)
        wrong = browser.post(f"{url}/elevate", json={"password": "nope"}, timeout=5)
        elevated = browser.post(f"{url}/elevate", json={"password": "wonderland"}, timeout=5)
        admin = browser.get(f"{url}/admin", timeout=5)
        old_id = requests.get(f"{url}/me", cookies={COOKIE: plain}, timeout=5)
        clock.now += 301
        later = browser.get(f"{url}/admin", timeout=5)
        me = browser.get(f"{url}/me", timeout=5)
    assert refused.status_code == 403 and wrong.status_code == 401
    assert elevated.json() == {"elevated": True} and browser.cookies[COOKIE] != plain
    assert admin.json() == {"admin": "alice"}
    assert old_id.status_code == 401
    assert later.status_code == 403 and me.json()["user"] == "alice"


def test_session_ends_at_its_maximum_lifetime_whatever_the_activity(r):
    clock = Clock()
    with serve(create_app(store=SessionStore(r, idle_timeout=600, max_lifetime=3600), clock=clock)) as url:
        browser = requests.Session()
        browser.post(f"{url}/login", json={"user": "alice", "password": "wonderland"}, timeout=5)
        alive = []
        for _ in range(8):  # a request every 8 minutes keeps the idle timer going...
            clock.now += 480
            alive.append(browser.get(f"{url}/me", timeout=5).status_code)
    assert alive == [200] * 7 + [401]  # ...but at 64 minutes the one-hour lifetime is over
