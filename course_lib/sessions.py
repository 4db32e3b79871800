"""Server-side sessions: unguessable ids, sliding idle expiry, a hard lifetime, log-out-everywhere.

`SessionStore` keeps each session in a hash and reads it with a Lua script that checks the absolute
deadline and restarts the idle TTL in the same round trip. A per-user index makes "list my
sessions" and "log out everywhere" possible; `rotate` gives a session a new id on login and on a
privilege change (the defence against session fixation). The guide's four functions are kept as
baselines, and `load_json_session` shows the JSON-string layout read with GETEX.

Keys written:
- `course:sessions:session:<id>`: hash {_user, _created, _deadline, _elevated_until, data:<name>...};
  times in ms since the epoch; TTL = the idle timeout, restarted by every read, capped at _deadline;
- `course:sessions:user:<user>:sessions`: sorted set, session id -> its deadline (ms): the index;
  TTL = the maximum lifetime, renewed by every login; it may list dead ids until their deadline;
- `course:sessions:guide:<uuid>` and `course:sessions:json:<id>`: strings holding JSON (baselines).

The index protocol (a session and its user's index live in different slots on a cluster, since the
id must not reveal the user, so no one command or script can write both):
- a session's id enters the index BEFORE the session is written, so no crash and no other app
  server ever sees a live session the index does not list: "log out everywhere" cannot miss one;
- an id leaves the index only when its deadline has passed (ZREMRANGEBYSCORE) or when whoever
  deleted its session removes it. Never because its session was not found: that session may be
  one being written right now, and removing its id would orphan it (live, yet unlisted). So the
  index may list dead ids until their deadline; readers skip them. (Deadlines are compared with
  the callers' `now`: app servers' clocks must agree, or one running ahead prunes a little early.)
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Mapping

from redis.exceptions import ResponseError

from course_lib import lua
from course_lib.keys import key

CHAPTER = "sessions"
SESSION_ID_BYTES = 32  # 256 random bits; the course's policy is at least 128 (OWASP's floor: 64 bits of entropy)
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")  # what token_urlsafe(32) produces
_DATA = "data:"


def _ms(now: float | None) -> int:
    return round((time.time() if now is None else now) * 1000)


def new_session_id() -> str:
    """A fresh id: 32 bytes from the OS's cryptographic generator (`secrets`), URL-safe base64, 43 chars."""
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_well_formed(session_id: object) -> bool:
    """True when `session_id` has the shape `new_session_id` produces; checked before any key is built,
    so a malformed or hostile cookie (spaces, braces, '*', a megabyte of text) never reaches Redis."""
    return isinstance(session_id, str) and _ID_PATTERN.fullmatch(session_id) is not None


@dataclass(frozen=True)
class Session:
    """A live session as read from Redis (times in seconds since the epoch)."""

    id: str
    user: str | None  # None: an anonymous (not logged-in) session
    created: float
    deadline: float
    elevated_until: float = 0.0
    data: dict[str, str] = field(default_factory=dict)

    def elevated(self, now: float | None = None) -> bool:
        """True while a recent re-authentication still grants extra privileges."""
        return self.elevated_until > (time.time() if now is None else now)


class SessionStore:
    """Sessions in Redis hashes, with sliding idle expiry and a hard maximum lifetime.

    Args:
        client: a `redis.Redis` or `RedisCluster`.
        idle_timeout: seconds without a request after which a session ends.
        max_lifetime: seconds after creation (or login) after which it ends whatever the activity.
        elevation: seconds that `rotate(..., elevate=True)` grants extra privileges for.

    Raises:
        ValueError: a timeout is not positive, or idle_timeout exceeds max_lifetime.
    """

    def __init__(self, client, idle_timeout: float = 1800, max_lifetime: float = 12 * 3600,
                 elevation: float = 300):
        if min(idle_timeout, max_lifetime, elevation) <= 0:
            raise ValueError("idle_timeout, max_lifetime and elevation must be positive")
        if idle_timeout > max_lifetime:
            raise ValueError(f"idle_timeout ({idle_timeout}) cannot exceed max_lifetime ({max_lifetime})")
        self.client = client
        self.idle_ms = round(idle_timeout * 1000)
        self.lifetime_ms = round(max_lifetime * 1000)
        self.elevation_ms = round(elevation * 1000)
        self._get = lua.register(client, "sessions_get")
        self._update = lua.register(client, "sessions_update")
        self._take = lua.register(client, "sessions_take")
        self._append = lua.register(client, "sessions_append")

    @staticmethod
    def session_key(session_id: str) -> str:
        return key(CHAPTER, "session", session_id)

    @staticmethod
    def index_key(user: str) -> str:
        return key(CHAPTER, "user", user, "sessions")

    def create(self, user: str | None, data: Mapping[str, str] | None = None, now: float | None = None) -> str:
        """Start a session for `user` (None or "": anonymous, not indexed) and return its new id.

        Commands: ZREMRANGEBYSCORE (ids past their deadline) + ZADD + PEXPIRE on the user's index (one
        pipeline), then HSET + PEXPIRE on the session (one MULTI): two round trips, index first
        (the module docstring's protocol). Login and `rotate` write through the same path.

        Raises:
            ValueError: `user` or a data name has spaces.
        """
        at = _ms(now)
        fields = {"_user": user or "", "_created": at, "_deadline": at + self.lifetime_ms,
                  **self._data_fields(data or {})}
        return self._write(new_session_id(), fields, at)

    def get(self, session_id: object, now: float | None = None) -> Session | None:
        """The live session with this id, its idle timer restarted; None for anything else.

        One EVALSHA (`sessions_get.lua`: HGET, PEXPIRE, HGETALL): read and slide are atomic and
        take one round trip. A malformed, unknown, expired or tampered id gives None, never an error.
        """
        if not is_well_formed(session_id):
            return None
        flat = self._get(keys=[self.session_key(session_id)], args=[_ms(now), self.idle_ms])
        return self._session(session_id, flat)

    def update(self, session_id: object, data: Mapping[str, str], now: float | None = None) -> bool:
        """Write some data fields of a live session (others are untouched); False if it is not live.

        One EVALSHA (`sessions_update.lua`: HGET, HSET, PEXPIRE): field-level and atomic, so two
        requests updating different fields at once both keep their change.
        """
        if not is_well_formed(session_id) or not data:
            return False
        pairs = [item for pair in self._data_fields(data).items() for item in pair]
        return bool(self._update(keys=[self.session_key(session_id)], args=[_ms(now), self.idle_ms, *pairs]))

    def append(self, session_id: object, name: str, item: str, now: float | None = None) -> list[str] | None:
        """Append `item` to the comma-separated data field `name` of a live session; the list after it.

        One EVALSHA (`sessions_append.lua`: HGET, HSET, PEXPIRE): the read-modify-write happens in
        the server, so two requests appending at once both keep their item. None, with nothing
        written, if the session is not live.

        Raises:
            ValueError: `name` has spaces, or `item` is empty or holds a comma.
        """
        if not item or "," in item:
            raise ValueError(f"item must be non-empty and hold no comma, got {item!r}")
        (field, value), = self._data_fields({name: item}).items()
        if not is_well_formed(session_id):
            return None
        listed = self._append(keys=[self.session_key(session_id)], args=[_ms(now), self.idle_ms, field, value])
        return listed.split(",") if listed else None

    def destroy(self, session_id: object) -> bool:
        """Log out: delete the session and its index entry; False if there was no such session.

        Commands: EVALSHA `sessions_take.lua` (HGETALL + DEL, atomic), then ZREM on the index.
        """
        if not is_well_formed(session_id):
            return False
        fields = self._take_fields(session_id)
        if fields.get("_user"):
            self.client.zrem(self.index_key(fields["_user"]), session_id)
        return bool(fields)

    def rotate(self, session_id: object, now: float | None = None, user: str | None = None,
               elevate: bool = False) -> str | None:
        """Move a live session to a new id and destroy the old one; None if it was not live.

        Call it when privileges change. With `user`, it is a login: the session becomes `user`'s
        and its lifetime starts again. With `elevate`, privileges are raised for `elevation` seconds.
        An attacker who planted or saw the old id (session fixation) is left holding a dead one.

        What a login carries over (a deliberate choice): the data of an anonymous session, or of
        `user`'s own, moves to the new id (the cart a visitor filled before logging in survives).
        That data was written by whoever held the old id, possibly an attacker who planted it, so
        keep only harmless data in anonymous sessions (a cart, never a role or a flag). The data
        of ANOTHER user's session is dropped: logging in as alice on bob's browser inherits nothing.

        Commands: EVALSHA `sessions_take.lua` (read and delete the old session atomically: two
        concurrent rotations cannot both succeed), ZREM from the old index, then `create`'s writes.
        """
        if not is_well_formed(session_id):
            return None
        fields = self._take_fields(session_id)
        if fields.get("_user"):
            self.client.zrem(self.index_key(fields["_user"]), session_id)
        at = _ms(now)
        if not fields or int(fields["_deadline"]) <= at:
            return None
        if user is not None:
            if fields.get("_user") not in ("", user):  # another user's session: none of its data carries over
                fields = {name: value for name, value in fields.items() if not name.startswith(_DATA)}
            fields.update({"_user": user, "_created": at, "_deadline": at + self.lifetime_ms, "_elevated_until": 0})
        if elevate:
            fields["_elevated_until"] = at + self.elevation_ms
        return self._write(new_session_id(), fields, at)

    def sessions_of(self, user: str, now: float | None = None) -> list[Session]:
        """The user's live sessions, oldest first, without restarting their idle timers.

        Commands: ZREMRANGEBYSCORE (ids past their deadline) + ZRANGE on the index, then one
        pipeline of HGETALL per id. Only sessions whose stored owner is `user` are returned. An id
        whose session is missing stays in the index until its deadline: it may be a session
        another app server is creating right now (index first), and removing it would orphan it.
        """
        index = self.index_key(user)
        at = _ms(now)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(index, "-inf", at)
            pipe.zrange(index, 0, -1)
            ids = pipe.execute()[1]
        if not ids:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hgetall(self.session_key(session_id))
            stored = pipe.execute()
        sessions = (self._session(session_id, fields, at) for session_id, fields in zip(ids, stored))
        return sorted((s for s in sessions if s is not None and s.user == user), key=lambda s: s.created)

    def destroy_all(self, user: str) -> int:
        """Log `user` out everywhere: delete every session the index lists; returns how many existed.

        Commands: ZRANGE; one pipeline of DEL per listed session (a cluster client splits it by
        slot); then ZREM of the ids whose session it deleted. An id whose session was not there
        stays listed (the module's protocol): if it is a login landing right now, that session
        survives this call but stays in the index, so the next call ends it.
        """
        index = self.index_key(user)
        ids = self.client.zrange(index, 0, -1)
        if not ids:
            return 0
        with self.client.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.delete(self.session_key(session_id))
            deleted = [session_id for session_id, existed in zip(ids, pipe.execute()) if existed]
        if deleted:
            self.client.zrem(index, *deleted)
        return len(deleted)

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _data_fields(data: Mapping[str, str]) -> dict[str, str]:
        for name in data:
            key(CHAPTER, name)  # same rule as key parts: non-empty, no spaces
        return {_DATA + name: str(value) for name, value in data.items()}

    def _write(self, session_id: str, fields: Mapping[str, object], now_ms: int) -> str:
        user, deadline = fields["_user"], int(fields["_deadline"])
        if user:
            index = self.index_key(user)
            with self.client.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(index, "-inf", now_ms)
                pipe.zadd(index, {session_id: deadline})
                pipe.pexpire(index, self.lifetime_ms)
                pipe.execute()
        session = self.session_key(session_id)
        ttl = min(self.idle_ms, deadline - now_ms)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(session, mapping=dict(fields))
            pipe.pexpire(session, ttl)
            pipe.execute()
        return session_id

    def _take_fields(self, session_id: str) -> dict[str, str]:
        flat = self._take(keys=[self.session_key(session_id)])
        return dict(zip(flat[::2], flat[1::2]))

    @staticmethod
    def _session(session_id: str, fields, now_ms: int | None = None) -> Session | None:
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2]))
        if not fields or "_deadline" not in fields:
            return None
        if now_ms is not None and int(fields["_deadline"]) <= now_ms:
            return None
        return Session(
            id=session_id,
            user=fields.get("_user") or None,
            created=int(fields["_created"]) / 1000,
            deadline=int(fields["_deadline"]) / 1000,
            elevated_until=int(fields.get("_elevated_until") or 0) / 1000,
            data={name[len(_DATA):]: value for name, value in fields.items() if name.startswith(_DATA)},
        )


def supports_field_ttl(client, probe_key: str) -> bool:
    """True when the server has per-field hash expiry (HEXPIRE: Redis >= 7.4, Valkey >= 9.0).

    Probes with HEXPIRE on `probe_key`, which must not exist (nothing is written either way).
    """
    try:
        client.hexpire(probe_key, 1, "probe")
    except ResponseError as error:
        if "unknown command" in str(error).lower():
            return False
        raise
    return True


# -- the JSON-string layout ---------------------------------------------------------------------

def save_json_session(client, session_key: str, data: Mapping[str, object], idle_timeout: int) -> None:
    """Store a whole session as one JSON string. Command: SET with EX. Rewrites every field each time."""
    client.set(session_key, json.dumps(dict(data), sort_keys=True), ex=idle_timeout)


def load_json_session(client, session_key: str, idle_timeout: int) -> dict | None:
    """Read a JSON-string session and restart its idle timer in the same command: GETEX with EX.

    Atomic and one round trip (Redis >= 6.2). None when the key is missing.
    """
    raw = client.getex(session_key, ex=idle_timeout)
    return None if raw is None else json.loads(raw)


# -- the guide's session functions, reproduced faithfully (including their flaws) -----------------

def guide_create_session(client, user_id: str, metadata: Mapping[str, object] | None = None,
                         now: float | None = None) -> str:
    """The guide's create: a UUID4 id (122 random bits), the data as JSON, a 24-hour TTL.

    The guide's setEx is written as SET ... EX (SETEX is deprecated; same effect, one command).

    No per-user index (so no "log out everywhere") and one fixed lifetime that `guide_extend_session`
    can push back forever.
    """
    session_id = str(uuid.uuid4())
    created = _ms(now)
    client.set(key(CHAPTER, "guide", session_id),
               json.dumps({"userId": user_id, **(metadata or {}), "createdAt": created}), ex=86_400)
    return session_id


def guide_get_session(client, session_id: str) -> dict | None:
    """The guide's read: GET and parse. It does not restart the timer; that is a separate call."""
    data = client.get(key(CHAPTER, "guide", session_id))
    return json.loads(data) if data else None


def guide_extend_session(client, session_id: str, ttl_seconds: int = 86_400) -> None:
    """The guide's "reset TTL on activity": EXPIRE, a second round trip after every read, no upper bound."""
    client.expire(key(CHAPTER, "guide", session_id), ttl_seconds)


def guide_destroy_session(client, session_id: str) -> None:
    """The guide's log-out: DEL."""
    client.delete(key(CHAPTER, "guide", session_id))
