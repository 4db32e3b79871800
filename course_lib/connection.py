"""Clients for the course: `connect()` for the standalone server, `connect_cluster()` for the cluster.

Two settings point them at servers you run yourself (docker compose, a cloud instance):

- `COURSE_REDIS_URL`, e.g. `redis://127.0.0.1:6379/0` or `rediss://user:pass@host:6380/0`
- `COURSE_CLUSTER_URL`, any one node of a cluster, e.g. `redis://127.0.0.1:7001`

When a setting is present nothing embedded starts for it. When it is absent the embedded servers
(`course_lib.runtime`) are started on demand and leased to this process, so a notebook works in
any Jupyter front end; they stop when the last process using them exits (or dies).

In a workshop (`python -m course_lib join ...`, see `course_lib.seat`) `connect()` uses the room's
server as the learner's user, in the learner's own database; `connect(room=False)` and the cluster
stay on this machine, for what a shared server cannot offer each learner.

Both clients decode replies to `str`, speak RESP3 (redis-py 8's default, stated so outputs do not
depend on the client version), and set their timeouts and retries deliberately rather than
inherit whatever the installed redis-py defaults to:

- `socket_connect_timeout` (`CONNECT_TIMEOUT`, 2 s): how long opening a connection may take;
- `socket_timeout` (`SOCKET_TIMEOUT`, 5 s): how long any one read of a reply may take. redis-py
  applies it to blocking commands too, and does not add their own timeout to it: `BLPOP key 10`
  or `XREAD BLOCK 10000` on these clients fails with `TimeoutError` after 5 s. Keep every block
  shorter than `SOCKET_TIMEOUT`, or give a worker that blocks longer its own client
  (`connect(socket_timeout=block + margin)`). Only Pub/Sub's `get_message(timeout=None)` lifts it;
- `retry` (`course_retry()`): a connection error or timeout is retried 3 times, with redis-py's
  `ExponentialWithJitterBackoff` between tries. A command that timed out may have run on the
  server, so its retry can apply a non-idempotent command (INCR) twice; chapter 09 counts that.
"""

from __future__ import annotations

import atexit
import os
import re

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from course_lib.seat import joined
from course_lib.settings import CLUSTER_URL_SETTING, REDIS_URL_SETTING

ROOM = "the workshop room"  # where a URL came from, when it is the join line's

SOCKET_TIMEOUT = 5.0  # seconds a reply may take, blocking commands included
CONNECT_TIMEOUT = 2.0  # seconds opening a connection may take
RETRIES = 3
RETRY_BASE = 0.025  # seconds: the backoff before retry k is drawn from [0, RETRY_BASE * 2**k)
RETRY_CAP = 1.0  # seconds: no backoff is longer (not reached with 3 retries)
_leased_stack = None  # the embedded stack this process leased, kept so it is leased once


class CourseConnectionError(redis.ConnectionError):
    """The course could not reach its server; the message names the setting and the fix."""


def course_retry() -> Retry:
    """Three retries of a connection error or timeout, with full-jitter exponential backoff.

    Before retry k (1, 2, 3) redis-py's `ExponentialWithJitterBackoff.compute(k)` sleeps
    `min(cap, random() * base * 2**k)`: a time drawn uniformly from [0, 50 ms), [0, 100 ms),
    [0, 200 ms) with the course's base of 25 ms, so 25, 50, 100 ms on average and at most 350 ms
    in all. Drawing from 0 ("full jitter") spreads out clients that lost the same server at the
    same moment, so they do not all come back in step.
    """
    return Retry(ExponentialWithJitterBackoff(base=RETRY_BASE, cap=RETRY_CAP), retries=RETRIES)


def _course_settings(options: dict) -> dict:
    """The course's client settings (see the module's docstring), overridden by `options`."""
    return {"decode_responses": True, "protocol": 3, "retry": course_retry(),
            "socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT, **options}


def redact(url: str) -> str:
    """`url` with its password replaced by `***`, fit to print."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def _embedded_stack():
    """Start (or join) the embedded servers, leased to this process for as long as it lives."""
    global _leased_stack
    from course_lib import runtime

    if _leased_stack is None or not _leased_stack.standalone.alive():
        _leased_stack = runtime.up(owner=os.getpid())
        atexit.register(runtime.release, os.getpid(), _leased_stack.folder)
    return _leased_stack


def server_url(setting: str = REDIS_URL_SETTING, room: bool = True) -> tuple[str, str]:
    """The URL to use and where it came from: the setting's name, `ROOM`, or "embedded".

    The standalone server is the workshop room's when this machine joined one (and `room` is True).
    """
    value = os.environ.get(setting, "").strip()
    if value:
        return value, setting
    seat = joined() if setting == REDIS_URL_SETTING and room else None
    if seat:
        return seat.url, ROOM
    stack = _embedded_stack()
    return stack.url(setting), "embedded"


def _restarted_embedded(url: str, setting: str) -> bool:
    """If `url` names an embedded server that died (a crash, a kill, a laptop asleep too long), run
    `up` to replace it on the same port, so a re-run cell just works; True if that happened."""
    from course_lib import runtime

    stack = runtime.load(runtime.runtime_dir())
    if stack is None or stack.url(setting) != url:
        return False
    return runtime.up(stack.folder).url(setting) == url


def _advice(source: str) -> str:
    if source == "the url argument":
        return "Check the host and port, and that the server is running."
    if source == ROOM:
        return ("Check that you are on the workshop's network and the room is started (`python -m course_lib doctor`), "
                "or leave the workshop: `python -m course_lib join --leave`.")
    if source == "embedded":
        return "Run `python -m course_lib status` to see the embedded servers, and `python -m course_lib up` to restart them."
    return (f"Check that the server is running (for the course's compose file: `docker compose up -d --wait`), "
            f"or unset {source} to use the embedded servers.")


def _invalid_url(source: str, url: str, exc: Exception) -> CourseConnectionError:
    return CourseConnectionError(
        f"{source}={redact(url)!r} is not a usable Redis URL ({exc}). "
        "Write it as redis://host:port/db, or rediss://host:port/db for TLS."
    )


def connect(url: str | None = None, room: bool = True, **options) -> redis.Redis:
    """A client for the course's standalone server (or the server at `url`), checked with one PING.

    If the configured server is an embedded one that has died, it is restarted on the same port first.

    Args:
        url: a server to use instead of the configured one, e.g. a scratch server's URL.
        room: in a workshop, the room's server (True) or this machine's own (False: for a chapter
            whose lessons need a whole server, such as Pub/Sub patterns or server settings).
        **options: passed to `redis.Redis.from_url`, overriding the course defaults.

    Raises:
        CourseConnectionError: the URL is malformed, the server does not answer, or the workshop
            room cannot hold the chapters (a Redis 7.0 room: no database per learner).
    """
    url, source = (url, "the url argument") if url else server_url(REDIS_URL_SETTING, room=room)
    settings = _course_settings(options)

    def attempt() -> redis.Redis:
        client = redis.Redis.from_url(url, **settings)
        try:
            client.ping()
        except redis.RedisError:
            client.close()
            raise
        return client

    try:
        try:
            client = attempt()
        except redis.ConnectionError:
            if not _restarted_embedded(url, REDIS_URL_SETTING):
                raise
            client = attempt()
    except ValueError as exc:
        raise _invalid_url(source, url, exc) from None
    except redis.RedisError as exc:
        raise CourseConnectionError(
            f"Cannot reach the Redis server at {redact(url)} (from {source}): {str(exc).rstrip('.')}. {_advice(source)}"
        ) from None
    if source == ROOM and server_identity(client)[0] != "Valkey":
        client.close()
        raise CourseConnectionError(
            f"The workshop room at {redact(url)} runs Redis, which cannot give each learner a database of their own, "
            "so the chapters cannot run there: ask the instructor to start the room with the bundled Valkey "
            "(the default), or leave the workshop: `python -m course_lib join --leave`.")
    return client


def connect_cluster(**options) -> RedisCluster:
    """A cluster client for the course's cluster; it learns every node from the one in the URL.

    If the configured cluster is the embedded one and a node has died, it is rebuilt first.

    Args:
        **options: passed to `RedisCluster.from_url`, overriding the course defaults.

    Raises:
        CourseConnectionError: the URL is malformed, unreachable, or not a cluster node.
    """
    url, source = server_url(CLUSTER_URL_SETTING)
    settings = _course_settings(options)
    try:
        try:
            return RedisCluster.from_url(url, **settings)
        except (RedisClusterException, redis.ConnectionError) as exc:
            if "not enabled" in str(exc) or not _restarted_embedded(url, CLUSTER_URL_SETTING):
                raise
            return RedisCluster.from_url(url, **settings)
    except ValueError as exc:
        raise _invalid_url(source, url, exc) from None
    except (RedisClusterException, redis.RedisError) as exc:
        hint = ""
        if "not enabled" in str(exc):
            hint = f" The server answers but is not in cluster mode: point {source} at a cluster node."
        raise CourseConnectionError(
            f"Cannot use the cluster at {redact(url)} (from {source}): {str(exc).rstrip('.')}.{hint} {_advice(source)}"
        ) from None


def credentials(client) -> dict:
    """`{"username": ..., "password": ...}` that `client` logs in with, for another client of the same servers.

    A bare `redis.Redis(host=..., port=...)` to one node of the cluster, a replica, or the same server
    over another protocol logs in as nobody, and an embedded stack that requires a password refuses
    it: pass `**credentials(r)` (or `rc`). Empty for servers that require none.
    """
    settings = client.nodes_manager.connection_kwargs if isinstance(client, RedisCluster) \
        else client.connection_pool.connection_kwargs
    return {name: settings[name] for name in ("username", "password") if settings.get(name)}


def server_identity(client) -> tuple[str, str, str]:
    """(engine, version, mode) of the server a client talks to, e.g. ("Valkey", "9.1.2", "cluster").

    Valkey still reports `redis_version` (as 7.2.4) for old clients; its own version is `valkey_version`.
    """
    info = client.info("server")
    if info.get("server_name") == "valkey":
        return "Valkey", info["valkey_version"], info.get("server_mode", "standalone")
    return "Redis", info["redis_version"], info.get("redis_mode", "standalone")
