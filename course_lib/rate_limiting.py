"""Rate limiters: five strategies behind one interface, plus the guide's two limiters as baselines.

Every limiter answers `hit(identity, cost=1, now=None) -> Decision` in ONE round trip: a Lua
script (from `course_lib/lua/`) reads, decides and writes atomically, so concurrent requests can
never all see "under the limit". Time is passed in (`now`, seconds since the epoch; the wall clock
when omitted) and reaches the script through ARGV, so tests replay traces at fixed times; the
scripts never read the server's clock. A denied request takes nothing from the quota.

Keys written (`<name>` is the limiter's name, `<identity>` the client being limited; the braces are
a cluster hash tag, so one identity's keys share a slot and one script may touch them all):

- `course:rate_limiting:{<name>:<identity>}:fixed:<window number>`: string, units used in that window;
- `course:rate_limiting:{<name>:<identity>}:log`: sorted set, one member per unit, scored by its time
  in ms and named `<ms>:<n>`: the sliding log;
- `course:rate_limiting:{<name>:<identity>}:counter:<window number>`: string, units used in that
  window (the current and previous one are read): the sliding-window counter;
- `course:rate_limiting:{<name>:<identity>}:bucket`: hash {level, at}: the token bucket;
- `course:rate_limiting:{<name>:<identity>}:tat`: string "<ms>:<part>", the theoretical arrival time: GCRA;
- `course:rate_limiting:guide:...`: the guide's limiters (string counters and a sorted set).

Every key carries a TTL, so an identity that stops calling leaves nothing behind.

Identities are strings without spaces, chosen by the caller: an account, or for a per-address limit
`address_identity(ip)`, which groups IPv6 addresses by their /64 network.

Whose clock: by default the app server's (`now`), so a trace replays at fixed times and the fixed
window and sliding-window counter can name their keys by window number before the call (a key
must be known to be passed in KEYS). The cost: app servers need synchronised clocks (NTP); one
whose clock runs fast treats entries as older than they are and admits early. `SlidingLog(...,
server_clock=True)` reads the server's clock instead (TIME inside the script): one clock for all
app servers, but nothing can fix it for a test.
"""

from __future__ import annotations

import ipaddress
import random
import time
from typing import Callable, NamedTuple

from course_lib import lua
from course_lib.keys import delete_prefix, key

CHAPTER = "rate_limiting"


class Decision(NamedTuple):
    """The answer to one request (immutable: a named tuple, the cheapest record to build per request).

    Attributes:
        allowed: whether the request may proceed (it was counted only if so).
        remaining: units still available right after this decision.
        retry_after: seconds until the same request would be allowed (0.0 when allowed).
        reset_after: seconds until nothing counts against the identity any more (full quota again).
    """

    allowed: bool
    remaining: int
    retry_after: float
    reset_after: float


def _now_ms(now: float | None) -> int:
    return round((time.time() if now is None else now) * 1000)


class RateLimiter:
    """Base of the five strategies: validation, keys, and the one script call per decision.

    Args:
        client: a `redis.Redis` or `RedisCluster`.
        name: names this limit (e.g. "api"), so several limits can cover the same identity.
        limit: units allowed per window (an int > 0).
        window: the window, in seconds (> 0, at least one millisecond).

    Raises:
        ValueError: limit or window is not positive, or name has spaces.
    """

    strategy = ""  # set by each subclass: the name of its Lua file after `rate_limiting_`

    def __init__(self, client, name: str, limit: int, window: float):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if not isinstance(window, (int, float)) or round(window * 1000) < 1:
            raise ValueError(f"window must be a positive number of seconds (at least 0.001), got {window!r}")
        key(CHAPTER, name)  # validates the name: non-empty, no spaces
        # built once, so that each `hit` only has to check the identity (see `key`)
        self._prefix = key(CHAPTER, "{" + name + ":")
        self.client = client
        self.name = name
        self.limit = limit
        self.window = window
        self.window_ms = round(window * 1000)
        self._script = lua.register(client, f"rate_limiting_{self.strategy}")

    def key(self, identity: str, *parts: object) -> str:
        """The key of `identity` for this limiter: `course:rate_limiting:{<name>:<identity>}:<parts>`.

        Raises:
            ValueError: identity is empty or has spaces (as `keys.key` refuses).
        """
        identity = str(identity)
        if identity.split() != [identity]:  # empty, or whitespace anywhere: one C-level check per call
            raise ValueError(f"identity must be non-empty and without spaces, got {identity!r}")
        tagged = f"{self._prefix}{identity}}}"
        return ":".join((tagged, *map(str, parts))) if parts else tagged

    def reset(self, identity: str) -> int:
        """Forget everything this limiter counted for `identity` (full quota again); keys deleted.

        Commands: SCAN + UNLINK over the identity's keys (`keys.delete_prefix`). Not atomic with
        concurrent hits, which may recreate a key at once.
        """
        return delete_prefix(self.client, self.key(identity) + ":")

    def hit(self, identity: str, cost: int = 1, now: float | None = None) -> Decision:
        """Decide one request of `cost` units from `identity` at time `now` (seconds; default: the clock).

        One EVALSHA (EVAL on first use): atomic, one round trip. Cluster-safe: all keys of one
        identity share a hash tag.

        Raises:
            ValueError: cost is not an integer between 1 and the limit (a request costing more
                than the limit could never be allowed), or identity has spaces.
        """
        if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= self.limit:
            raise ValueError(f"cost must be an integer from 1 to the limit ({self.limit}), got {cost!r}")
        keys, args = self._keys_and_args(identity, cost, _now_ms(now))
        return self._decision(self._script(keys=keys, args=args), args)

    def _keys_and_args(self, identity: str, cost: int, now_ms: int) -> tuple[list[str], list[int]]:
        raise NotImplementedError

    def _decision(self, reply: list[int], args: list[int]) -> Decision:
        """The `Decision` from the script's reply {allowed (1|0), remaining, retry_after_ms, reset_after_ms}."""
        allowed, remaining, retry_ms, reset_ms = reply
        return Decision(allowed == 1, remaining, retry_ms / 1000, reset_ms / 1000)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, limit={self.limit}, window={self.window})"


class FixedWindow(RateLimiter):
    """At most `limit` units per clock-aligned window ([0, w), [w, 2w), ...).

    Script: INCRBY, then PEXPIRE if the counter was just created, or DECRBY if the request is over
    the limit (a denied request takes nothing: both writes cancel out, in one atomic script). The
    allowed case, the common one, is one command; the price is that a flood of denied requests
    writes (twice each, replicated and logged to the AOF) where a GET first would write nothing.
    It replies with one integer, the units used before this request, and `hit` derives the rest
    (it knows the limit, the cost and when the window ends). Cheap (one small string per identity) but
    bursty: a client may spend its whole quota at the end of one window and again at the start of
    the next, so up to 2 x limit can pass within one window's length.
    """

    strategy = "fixed_window"

    def _keys_and_args(self, identity, cost, now_ms):
        number, into = divmod(now_ms, self.window_ms)
        return [f"{self.key(identity)}:fixed:{number}"], [self.limit, cost, self.window_ms - into]

    def _decision(self, reply, args):
        # the script returns only the units used before this request; the rest is known here
        limit, cost, left_ms = args
        if reply + cost <= limit:
            return Decision(True, limit - reply - cost, 0.0, left_ms / 1000)
        return Decision(False, limit - reply, left_ms / 1000, left_ms / 1000)


class SlidingLog(RateLimiter):
    """At most `limit` units in ANY window of length `window` ending now: exact.

    Script: ZREMRANGEBYSCORE (forget entries at or before now - window), ZCARD, then, if allowed,
    ZCOUNT (entries already made this ms, to name the new ones uniquely), one ZADD for all `cost`
    entries and PEXPIRE; an allowed request's reply is one integer (what remains). Memory grows
    with the limit: one sorted-set member per unit in the window.
    """

    strategy = "sliding_log"

    def __init__(self, client, name: str, limit: int, window: float, server_clock: bool = False):
        """As `RateLimiter`; with `server_clock`, the script reads the server's TIME and `hit` takes no `now`."""
        super().__init__(client, name, limit, window)
        self.server_clock = server_clock

    def hit(self, identity: str, cost: int = 1, now: float | None = None) -> Decision:
        if self.server_clock and now is not None:
            raise ValueError("this limiter reads the server's clock (TIME): pass no `now`")
        return super().hit(identity, cost, now)

    def _keys_and_args(self, identity, cost, now_ms):
        return [f"{self.key(identity)}:log"], ["server" if self.server_clock else now_ms, self.window_ms, self.limit, cost]

    def _decision(self, reply, args):
        # allowed: the script returns only what remains (an entry is forgotten one window after it is made)
        if isinstance(reply, int):
            return Decision(True, reply, 0.0, self.window_ms / 1000)
        remaining, retry_ms, reset_ms = reply
        return Decision(False, remaining, retry_ms / 1000, reset_ms / 1000)


class SlidingWindowCounter(RateLimiter):
    """The sliding log's behaviour approximated with two counters (the previous and current window).

    The estimate is previous x (share of the previous window still inside the sliding window),
    rounded down, plus current. Script: MGET of both counters, then, only if allowed, SET ... PX
    (creating the current counter with its TTL) or INCRBY; an allowed request's reply leaves out
    retry_after (0), the smaller reply being cheaper. Constant memory
    per identity; exact when traffic is even. It assumes the previous window's requests were spread
    evenly: a client that spends the limit at the very end of one window sees them discounted in
    the next, and can get up to 2 x limit through within one sliding window
    (`experiments.rate_limiting.run_worst_case` measures it).
    """

    strategy = "sliding_counter"

    def _keys_and_args(self, identity, cost, now_ms):
        number, elapsed = divmod(now_ms, self.window_ms)
        base = self.key(identity)
        return [f"{base}:counter:{number - 1}", f"{base}:counter:{number}"], [self.limit, cost, self.window_ms, elapsed]

    def _decision(self, reply, args):
        # an allowed request's reply has no retry_after (it is 0): two elements, a denied one's three
        if len(reply) == 2:
            remaining, reset_ms = reply
            return Decision(True, remaining, 0.0, reset_ms / 1000)
        remaining, retry_ms, reset_ms = reply
        return Decision(False, remaining, retry_ms / 1000, reset_ms / 1000)


class TokenBucket(RateLimiter):
    """A bucket of `limit` tokens refilled continuously at `limit` per `window`; a request takes `cost`.

    Script: HMGET, then HSET + PEXPIRE if allowed. Allows bursts up to `limit`, then a steady rate;
    the level is stored in integer units (1/window_ms of a token) so no float is ever rounded.
    """

    strategy = "token_bucket"

    def _keys_and_args(self, identity, cost, now_ms):
        return [f"{self.key(identity)}:bucket"], [now_ms, self.limit, self.window_ms, cost]


class GCRA(RateLimiter):
    """The generic cell rate algorithm: the token bucket's decisions from one stored time.

    One unit of quota is earned back every `window / limit` seconds, and at most `limit` units can
    be saved up. GCRA keeps only the theoretical arrival time (TAT): the instant at which every unit
    taken so far will have been earned back. A request of `cost` units is allowed if, after adding
    `cost x window / limit` to the TAT (or to now, if the TAT is past), the TAT is at most one
    `window` ahead of now. That is the token bucket read backwards (its missing tokens are the TAT's
    lead over now, times `limit / window`), so on time-ordered requests both give the same
    `Decision` (`experiments.rate_limiting.run_gcra` checks it, and a pure-Python GCRA).

    Script: GET, then SET ... PX if allowed: one string per identity, written with its TTL in one
    command (the key vanishes at the TAT: no debt, full quota). Times are exact: the TAT is stored
    as whole ms plus a part in 1/limit ms, so no float is ever stored.

    Caveat: when `now` goes backwards (an app server with a slow clock), GCRA is stricter than the
    token bucket: the TAT's lead over an earlier `now` is larger, while the bucket ignores a refill
    that would be negative and keeps its level.
    """

    strategy = "gcra"

    def _keys_and_args(self, identity, cost, now_ms):
        return [f"{self.key(identity)}:tat"], [now_ms, self.limit, self.window_ms, cost]


STRATEGIES: dict[str, type[RateLimiter]] = {
    "fixed window": FixedWindow,
    "sliding log": SlidingLog,
    "sliding window counter": SlidingWindowCounter,
    "token bucket": TokenBucket,
    "gcra": GCRA,
}


def address_identity(address: str) -> str:
    """The identity a per-address limit charges a client address to: IPv4 whole, IPv6 by its /64.

    One IPv6 subscriber is routinely given a whole /64 (2^64 addresses, often a fresh one per
    connection by privacy extensions), so a limit per IPv6 address is no limit: every request can
    come from a new one. Grouping by /64 counts one subscriber once. An IPv4-mapped IPv6 address
    (`::ffff:203.0.113.7`, what a dual-stack socket reports for an IPv4 client) is the IPv4 address.
    An IPv6 zone (`fe80::1%eth0`) is dropped. Pure Python, no Redis command. Identities look like
    `"ip:203.0.113.7"` for an IPv4 client and `"ip:2001:db8:1:2::/64"` for any client in that /64.

    Args:
        address: the client's address, as `request.remote_addr` gives it.

    Returns:
        The identity, with no spaces so it is safe inside a key (examples above).

    Raises:
        ValueError: not an IP address.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return f"ip:{ip}"
    return f"ip:{ipaddress.IPv6Network((ip, 64), strict=False)}"


# -- the guide's limiters, reproduced faithfully (including their flaws) ---------------------------

def guide_fixed_window(client, user_id: str, limit: int = 100, window: int = 60, now: float | None = None,
                       between: Callable[[], None] | None = None) -> dict:
    """The guide's fixed window: INCR, then EXPIRE in a second call when the count is 1.

    NOT safe: if the process dies between the two calls (`between` lets you simulate that by
    raising), the counter has no TTL and never expires: once it passes `limit`, that user is
    denied forever. Returns the guide's shape, {"allowed", "remaining"}.
    """
    now = time.time() if now is None else now
    counter = key(CHAPTER, "guide", "fixed", user_id, int(now // window))
    count = client.incr(counter)
    if between is not None:
        between()
    if count == 1:
        client.expire(counter, window)
    return {"allowed": count <= limit, "remaining": max(0, limit - count)}


def guide_sliding_window(client, user_id: str, limit: int = 100, window: int = 60,
                         now: float | None = None) -> dict:
    """The guide's sliding window: ZREMRANGEBYSCORE, ZCARD, ZADD, EXPIRE as four separate calls.

    NOT atomic: concurrent requests can all read the same ZCARD before any of them adds its entry,
    so all are allowed and the limit is exceeded. Four round trips per allowed request (two per
    denied one). Returns the guide's shape, {"allowed", "remaining"}.
    """
    now_ms = _now_ms(now)
    log = key(CHAPTER, "guide", "sliding", user_id)
    client.zremrangebyscore(log, 0, now_ms - window * 1000)
    count = client.zcard(log)
    if count >= limit:
        return {"allowed": False, "remaining": 0}
    client.zadd(log, {f"{now_ms}-{random.random()}": now_ms})
    client.expire(log, window)
    return {"allowed": True, "remaining": limit - count - 1}
