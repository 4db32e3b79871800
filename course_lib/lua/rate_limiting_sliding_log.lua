-- KEYS[1]: the log: sorted set, one member per unit taken, scored by its time in ms
-- KEYS[2]: a sequence (string holding an integer) that names the members uniquely
-- ARGV[1]: now, in milliseconds since the epoch, or "server": read the server's own clock (TIME)
-- ARGV[2]: window length in milliseconds
-- ARGV[3]: limit: units allowed in any window
-- ARGV[4]: cost: units this request takes (1 <= cost <= limit)
-- returns: {allowed (1|0), remaining, retry_after_ms, reset_after_ms}
local now = tonumber(ARGV[1])
if ARGV[1] == 'server' then
    -- one clock for every app server, but no test can fix it (a script may read TIME and still write
    -- since Redis 5, which replicates a script's effects, not the script)
    local clock = redis.call('TIME')
    now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])

-- an entry counts while now - time < window: drop every entry at or before now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used + cost > limit then
    -- the request fits once the (used + cost - limit) oldest entries have left the window
    local rank = used + cost - limit - 1
    local blocking = redis.call('ZRANGE', KEYS[1], rank, rank, 'WITHSCORES')
    local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
    return {0, limit - used, tonumber(blocking[2]) + window - now, tonumber(newest[2]) + window - now}
end
local last = redis.call('INCRBY', KEYS[2], cost)
for member = last - cost + 1, last do
    redis.call('ZADD', KEYS[1], now, member)
end
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return {1, limit - used - cost, 0, window}
