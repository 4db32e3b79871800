-- KEYS[1]: the log: sorted set, one member per unit taken, scored by its time in ms
-- ARGV[1]: now, in milliseconds since the epoch, or "server": read the server's own clock (TIME)
-- ARGV[2]: window length in milliseconds
-- ARGV[3]: limit: units allowed in any window
-- ARGV[4]: cost: units this request takes (1 <= cost <= limit)
-- returns: allowed: remaining (an integer); denied: {remaining, retry_after_ms, reset_after_ms}
-- An allowed request's reply is one integer (retry_after is 0 and reset_after the window, both
-- known to the caller): the smallest reply is the cheapest to build, send and parse.
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
    return {limit - used, tonumber(blocking[2]) + window - now, tonumber(newest[2]) + window - now}
end
-- members must be unique, or two units taken in the same ms would be one: "<ms>:<k>", k = used + n.
-- While time moves forward, the entries scored `now` are the newest, named at most used, so these
-- names are free; NX keeps a taken one (possible only after an app server's clock went back).
local entries = {}
for n = 1, cost do
    entries[2 * n - 1] = now
    entries[2 * n] = now .. ':' .. (used + n)
end
local missing = cost - redis.call('ZADD', KEYS[1], 'NX', unpack(entries))
if missing > 0 then
    -- the rare case: name the missing units after the highest number already scored `now`
    local top = 0
    for _, member in ipairs(redis.call('ZRANGE', KEYS[1], now, now, 'BYSCORE')) do
        top = math.max(top, tonumber(string.match(member, ':(%d+)$')))
    end
    for n = 1, missing do
        redis.call('ZADD', KEYS[1], now, now .. ':' .. (top + n))
    end
end
redis.call('PEXPIRE', KEYS[1], window)
return limit - used - cost
