"""Reference solutions to chapter 05's exercises (the notebook's stubs, solved)."""

from __future__ import annotations

SLIDING_LOG = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
local n = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[3], n)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


def fixed_window(client, counter, limit, window):
    """INCR and EXPIRE ... NX in one MULTI: the TTL is set once, and a crash cannot split them."""
    with client.pipeline(transaction=True) as pipe:
        pipe.incr(counter)
        pipe.expire(counter, window, nx=True)
        count, _ = pipe.execute()
    return count <= limit


def sliding_log(client, log, limit, window_ms, now_ms):
    """One Lua script: forget old entries, count, add a uniquely numbered entry if there is room.

    The numbering key `<log>:seq` is passed in KEYS like the log; on a cluster both names would need
    one hash tag, as `course_lib.rate_limiting.SlidingLog`'s keys have.
    """
    return bool(client.eval(SLIDING_LOG, 2, log, f"{log}:seq", limit, window_ms, now_ms))
