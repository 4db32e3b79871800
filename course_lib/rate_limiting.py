"""Rate limiters: four strategies behind one interface, plus the guide's two limiters as baselines.

Every limiter answers `hit(identity, cost=1, now=None) -> Decision` in ONE round trip: a Lua
script (from `course_lib/lua/`) reads, decides and writes atomically, so concurrent requests can
never all see "under the limit". Time is passed in (`now`, seconds since the epoch; the wall clock
when omitted) and reaches the script through ARGV, so tests replay traces at fixed times; the
scripts never read the server's clock. A denied request takes nothing from the quota.

Keys written (`<name>` is the limiter's name, `<identity>` the client being limited; the braces are
a cluster hash tag, so one identity's keys share a slot and one script may touch them all):

- `course:rate_limiting:{<name>:<identity>}:fixed:<window number>`: string, units used in that window;
- `course:rate_limiting:{<name>:<identity>}:log` (sorted set, one member per unit, scored by time in ms)
  and `...:log:seq` (string, names the members): the sliding log;
- `course:rate_limiting:{<name>:<identity>}:counter:<window number>`: string, units used in that
  window (the current and previous one are read): the sliding-window counter;
- `course:rate_limiting:{<name>:<identity>}:bucket`: hash {level, at}: the token bucket;
- `course:rate_limiting:guide:...`: the guide's limiters (string counters and a sorted set).

Every key carries a TTL, so an identity that stops calling leaves nothing behind.

Whose clock: by default the app server's (`now`), so a trace replays at fixed times and the fixed
window and sliding-window counter can name their keys by window number before the call (a key
must be known to be passed in KEYS). The cost: app servers need synchronised clocks (NTP); one
whose clock runs fast treats entries as older than they are and admits early. `SlidingLog(...,
server_clock=True)` reads the server's clock instead (TIME inside the script): one clock for all
app servers, but nothing can fix it for a test.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

from course_lib import lua
from course_lib.keys import delete_prefix, hash_tag, key

CHAPTER = "rate_limiting"


@dataclass(frozen=True)
class Decision:
    """The answer to one request.

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
    """Base of the four strategies: validation, keys, and the one script call per decision.

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
        self.client = client
        self.name = name
        self.limit = limit
        self.window = window
        self.window_ms = round(window * 1000)
        self._script = lua.register(client, f"rate_limiting_{self.strategy}")

    def key(self, identity: str, *parts: object) -> str:
        """The key of `identity` for this limiter: `course:rate_limiting:{<name>:<identity>}:<parts>`."""
        return key(CHAPTER, hash_tag(self.name, identity), *parts)

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
        allowed, remaining, retry_ms, reset_ms = self._script(keys=keys, args=args)
        return Decision(bool(allowed), int(remaining), retry_ms / 1000, reset_ms / 1000)

    def _keys_and_args(self, identity: str, cost: int, now_ms: int) -> tuple[list[str], list[int]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, limit={self.limit}, window={self.window})"


class FixedWindow(RateLimiter):
    """At most `limit` units per clock-aligned window ([0, w), [w, 2w), ...).

    Script: GET, then INCRBY + PEXPIRE only if allowed. Cheap (one small string per identity) but
    bursty: a client may spend its whole quota at the end of one window and again at the start of
    the next, so up to 2 x limit can pass within one window's length.
    """

    strategy = "fixed_window"

    def _keys_and_args(self, identity, cost, now_ms):
        number, into = divmod(now_ms, self.window_ms)
        return [f"{self.key(identity)}:fixed:{number}"], [self.limit, cost, self.window_ms - into]


class SlidingLog(RateLimiter):
    """At most `limit` units in ANY window of length `window` ending now: exact.

    Script: ZREMRANGEBYSCORE (forget entries at or before now - window), ZCARD, then INCRBY + ZADD +
    PEXPIRE if allowed. Memory grows with the limit: one sorted-set member per unit in the window.
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
        log = f"{self.key(identity)}:log"
        return [log, f"{log}:seq"], ["server" if self.server_clock else now_ms, self.window_ms, self.limit, cost]


class SlidingWindowCounter(RateLimiter):
    """The sliding log's behaviour approximated with two counters (the previous and current window).

    The estimate is previous x (share of the previous window still inside the sliding window),
    rounded down, plus current. Scripts: two GETs, then INCRBY + PEXPIRE if allowed. Constant memory
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


class TokenBucket(RateLimiter):
    """A bucket of `limit` tokens refilled continuously at `limit` per `window`; a request takes `cost`.

    Script: HMGET, then HSET + PEXPIRE if allowed. Allows bursts up to `limit`, then a steady rate;
    the level is stored in integer units (1/window_ms of a token) so no float is ever rounded.
    """

    strategy = "token_bucket"

    def _keys_and_args(self, identity, cost, now_ms):
        return [f"{self.key(identity)}:bucket"], [now_ms, self.limit, self.window_ms, cost]


STRATEGIES: dict[str, type[RateLimiter]] = {
    "fixed window": FixedWindow,
    "sliding log": SlidingLog,
    "sliding window counter": SlidingWindowCounter,
    "token bucket": TokenBucket,
}


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
