"""A small web app that puts chapter 05's rate limiter and chapter 06's sessions behind real HTTP.

Why Flask (and not FastAPI): the course's patterns are plain synchronous redis-py calls. Flask runs
each request in a thread and calls them as they are; FastAPI's async handlers would need
`redis.asyncio` twins of every pattern (or a hop to a thread pool for each call) and a separate ASGI
server. Flask's own server, werkzeug, binds a free port and runs in a thread of the notebook or test,
and stops cleanly (`serve`), which is all a course needs. In production put it behind a real WSGI
server (gunicorn, uWSGI) and a reverse proxy.

Rate limiting (every route but /health): the identity is the account of a known `X-API-Key`
header, else the client's address as `rate_limiting.address_identity` groups it: an IPv4 address
whole, an IPv6 address by its /64 network (one subscriber's share: a limit per IPv6 address could be
escaped by changing address for each request). Which address: the TCP peer's (`request.remote_addr`), never a
header, unless `trust_proxy=True` says the app sits behind ONE reverse proxy of yours; then it is
the last X-Forwarded-For entry, the one that proxy appended (entries to its left are whatever the
client sent). An unknown API key is charged to the client address's limit before it is refused
(401), so guessing keys is limited like any request. Every limited response carries
`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the quota is
full again, rounded up); a denied one is a 429 with a JSON body and `Retry-After` (seconds, rounded up).

When Redis is down (a `RedisError`), each route fails the way that costs least:
- the limiter fails OPEN (the request is served, unlimited) on ordinary routes: an hour without
  limits risks load, an hour of 503s is an outage; but it fails CLOSED (503) on /login and
  /elevate, where an unlimited route is unlimited password guessing;
- the session routes fail CLOSED (503 with `Retry-After`): without the store the app cannot tell
  who is asking, and answering "not logged in" would send users to log in again for nothing.

Sessions: the cookie `sid` holds only the session id; it is HttpOnly (no JavaScript can read it),
SameSite=Lax (not sent on cross-site POSTs) and Secure when the request came over HTTPS.

Routes (JSON in, JSON out):
- GET /health: {"status": "ok"}, never limited (readiness checks must not spend quota);
- GET /: {"hello": <account, IP or user>}: the route to hammer;
- POST /cart {"item"}: adds to the visitor's cart in one atomic step (`SessionStore.append`),
  starting an anonymous session if there is no live one;
- POST /login {"user", "password"}: a new session id, the cart carried over (`SessionStore.rotate`);
- GET /me: who the session belongs to, or 401;
- GET /sessions: how many sessions the user has open, and which one is this;
- POST /elevate {"password"}: re-authenticate: a new id, extra privileges for a few minutes;
- GET /admin: 403 unless elevated;
- POST /logout, POST /logout-everywhere.

Layout: the hooks (`limit_request`, `add_rate_limit_headers`) and the views are module-level
functions that `create_app` registers, so they have names to show and test by; what differs from
one app to the next (limiter, store, users, API keys, clock) is the app's `Services`, which they
read through Flask's `current_app`. Not a Blueprint: this app has one set of routes, and a Blueprint
would only add a prefix to every endpoint name (the names `limit_request` and FAIL_CLOSED match).

Keys written: those of the limiter and the store given to `create_app` (see their modules).
"""

from __future__ import annotations

import contextlib
import hmac
import math
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from flask import Flask, current_app, g, jsonify, request
from redis.exceptions import RedisError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import WSGIRequestHandler, make_server

from course_lib.concurrency import wait_for
from course_lib.rate_limiting import RateLimiter, address_identity
from course_lib.sessions import SessionStore

COOKIE = "sid"
DEMO_USERS = {"alice": "wonderland", "bob": "builder"}  # a demo: real apps store password hashes
FAIL_CLOSED = {"login", "elevate"}  # routes refused (503) when the limiter cannot count: password checks
RETRY_AFTER_OUTAGE = 5  # seconds a client is asked to wait when Redis is down
EXTENSION = "course_webapp"  # the key of the app's `Services` in `app.extensions`


def _error(status: int, message: str, **extra):
    response = jsonify(error=message, **extra)
    response.status_code = status
    return response


def _unavailable(what: str):
    response = _error(503, f"{what} unavailable, try again shortly", retry_after=RETRY_AFTER_OUTAGE)
    response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
    return response


@dataclass(frozen=True)
class Services:
    """What the hooks and routes work with, one set per app: `create_app` keeps it in `app.extensions`."""

    limiter: RateLimiter | None
    store: SessionStore | None
    users: Mapping[str, str]
    api_keys: Mapping[str, str]
    clock: Callable[[], float]


def _services() -> Services:
    return current_app.extensions[EXTENSION]


# Rate limiting: a hook before every request, and one adding the headers to every response --------

def limit_request():
    """Runs before every request: counts it against its identity's limit.

    Returns the answer that replaces the route's (429 over the limit, 401 for an unknown API key),
    or None to let the route answer.
    """
    services = _services()
    if services.limiter is None or request.endpoint == "health":
        return None
    api_key = request.headers.get("X-API-Key")
    account = services.api_keys.get(api_key) if api_key is not None else None
    # an unknown key counts against the address it came from: guessing keys spends that quota
    identity = f"account:{account}" if account else address_identity(request.remote_addr)
    try:
        decision = services.limiter.hit(identity, now=services.clock())
    except RedisError:
        if request.endpoint in FAIL_CLOSED:
            return _unavailable("rate limiter")
        return None  # fail open (see the module docstring)
    g.rate_limit = decision
    if not decision.allowed:
        wait = max(1, math.ceil(decision.retry_after))
        response = _error(429, "too many requests", retry_after=wait)
        response.headers["Retry-After"] = str(wait)
        return response
    if api_key is not None and account is None:
        return _error(401, "unknown API key")
    return None


def add_rate_limit_headers(response):
    """Runs after every request: the X-RateLimit-* headers on the answer to each request the limiter counted."""
    decision = g.get("rate_limit")
    if decision is not None:
        response.headers["X-RateLimit-Limit"] = str(_services().limiter.limit)
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
        response.headers["X-RateLimit-Reset"] = str(math.ceil(decision.reset_after))
    return response


# Sessions -----------------------------------------------------------------------------------------

def session_store_unavailable(error):
    """A `RedisError` in a route: 503. Sessions fail closed: without the store nobody can be recognised."""
    return _unavailable("session store")


def _current_session():
    services = _services()
    if services.store is None:
        return None
    return services.store.get(request.cookies.get(COOKIE), now=services.clock())


def _with_cookie(response, session_id: str):
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Lax", secure=request.is_secure, path="/")
    return response


def _without_cookie(response):
    response.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=request.is_secure, path="/")
    return response


def _password_ok(user: str, password: object) -> bool:
    expected = _services().users.get(user)
    return (expected is not None and isinstance(password, str)
            and hmac.compare_digest(expected.encode(), password.encode()))


def health():
    return jsonify(status="ok")


def hello():
    session = _current_session()
    return jsonify(hello=(session.user if session and session.user else None) or request.remote_addr)


def add_to_cart():
    services = _services()
    if services.store is None:
        return _error(404, "no session store")
    item = (request.get_json(silent=True) or {}).get("item")
    if not isinstance(item, str) or not item.isalnum():
        return _error(400, "send {\"item\": <letters and digits>}")
    session = _current_session()
    now = services.clock()
    # appended in the server, atomically: two parallel POSTs both keep their item
    cart = services.store.append(session.id, "cart", item, now=now) if session else None
    if cart is None:  # no live session (none yet, or it ended since it was read): start one
        cart, session_id = [item], services.store.create(None, {"cart": item}, now=now)
    else:
        session_id = session.id
    return _with_cookie(jsonify(cart=cart), session_id)


def login():
    services = _services()
    if services.store is None:
        return _error(404, "no session store")
    body = request.get_json(silent=True) or {}
    user = body.get("user")
    if not isinstance(user, str) or not _password_ok(user, body.get("password")):
        return _error(401, "wrong user or password")
    session = _current_session()
    # a new id at login, whatever id the browser came with: a planted id is worth nothing.
    # `rotate` carries an anonymous session's data (the cart) to the new id, never another user's.
    session_id = services.store.rotate(session.id, now=services.clock(), user=user) if session is not None else None
    return _with_cookie(jsonify(user=user), session_id or services.store.create(user, now=services.clock()))


def me():
    session = _current_session()
    if session is None or session.user is None:
        return _error(401, "not logged in")
    return jsonify(user=session.user, elevated=session.elevated(_services().clock()),
                   cart=list(filter(None, session.data.get("cart", "").split(","))))


def my_sessions():
    session = _current_session()
    if session is None or session.user is None:
        return _error(401, "not logged in")
    services = _services()
    mine = services.store.sessions_of(session.user, now=services.clock())
    return jsonify(count=len(mine), this_one_included=any(s.id == session.id for s in mine))


def elevate():
    session = _current_session()
    if session is None or session.user is None:
        return _error(401, "not logged in")
    if not _password_ok(session.user, (request.get_json(silent=True) or {}).get("password")):
        return _error(401, "wrong password")
    services = _services()
    session_id = services.store.rotate(session.id, now=services.clock(), elevate=True)
    if session_id is None:
        return _without_cookie(_error(401, "not logged in"))
    return _with_cookie(jsonify(elevated=True), session_id)


def admin():
    session = _current_session()
    if session is None or session.user is None:
        return _error(401, "not logged in")
    if not session.elevated(_services().clock()):
        return _error(403, "confirm your password first (POST /elevate)")
    return jsonify(admin=session.user)


def logout():
    store = _services().store
    ended = store.destroy(request.cookies.get(COOKIE)) if store is not None else False
    return _without_cookie(jsonify(logged_out=ended))


def logout_everywhere():
    session = _current_session()
    if session is None or session.user is None:
        return _error(401, "not logged in")
    return _without_cookie(jsonify(destroyed=_services().store.destroy_all(session.user)))


# Each view's function name is its endpoint: `limit_request` exempts "health", FAIL_CLOSED names two.
ROUTES = (  # method, path, view
    ("GET", "/health", health),
    ("GET", "/", hello),
    ("POST", "/cart", add_to_cart),
    ("POST", "/login", login),
    ("GET", "/me", me),
    ("GET", "/sessions", my_sessions),
    ("POST", "/elevate", elevate),
    ("GET", "/admin", admin),
    ("POST", "/logout", logout),
    ("POST", "/logout-everywhere", logout_everywhere),
)


def create_app(limiter: RateLimiter | None = None, store: SessionStore | None = None,
               users: Mapping[str, str] = DEMO_USERS, api_keys: Mapping[str, str] | None = None,
               trust_proxy: bool = False, clock: Callable[[], float] = time.time) -> Flask:
    """Build the app around a limiter and a session store (either may be None to leave it out).

    Args:
        limiter: limits every route but /health, per API-key account or per client address (IPv6: per /64).
        store: backs the session routes (they answer 404 without one).
        users: user -> password, for /login and /elevate.
        api_keys: API key -> account name; an unknown key is charged to the client address's limit,
            then refused (401): never limited on its own, or a client could mint keys to escape its
            address's limit, and never refused before counting, or keys could be guessed unlimited.
        trust_proxy: only behind exactly one reverse proxy of yours: take the client address and the
            scheme from the last X-Forwarded-For / X-Forwarded-Proto entry, the one it appended.
            Anywhere else, clients could forge them: the address is then the TCP peer's.
        clock: the time given to the limiter and the store (a fixed clock makes a demo repeatable).
    """
    app = Flask(__name__)
    if trust_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)
    app.extensions[EXTENSION] = Services(limiter, store, users, dict(api_keys or {}), clock)
    app.before_request(limit_request)
    app.after_request(add_rate_limit_headers)
    app.errorhandler(RedisError)(session_store_unavailable)
    for method, path, view in ROUTES:
        app.add_url_rule(path, view_func=view, methods=[method])
    return app


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's request handler without its one-line-per-request log on stderr (errors still show)."""

    def log_request(self, code="-", size="-") -> None:
        pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(app: Flask, host: str = "127.0.0.1", timeout: float = 10) -> Iterator[str]:
    """Serve `app` on a free port of `host` in a background thread; yields its base URL.

    `host` may be an IPv6 address ("::1"): the URL then writes it in brackets. Waits (at most `timeout` s) until GET /health answers, and on exit shuts the server down and
    joins its thread, so nothing keeps running after the block.
    """
    server = make_server(host, 0, app, threaded=True, request_handler=_QuietHandler)
    # a short poll interval: shutdown() waits for the serving loop's next poll
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="course-webapp",
                              daemon=True)
    thread.start()
    url = f"http://[{host}]:{server.server_port}" if ":" in host else f"http://{host}:{server.server_port}"
    try:
        wait_for(lambda: _answers(url), timeout, f"the web app to answer on {url}")
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=timeout)
