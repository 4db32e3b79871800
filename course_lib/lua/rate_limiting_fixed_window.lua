-- KEYS[1]: the counter of the current window (string holding an integer)
-- ARGV[1]: limit: units allowed per window
-- ARGV[2]: cost: units this request takes (1 <= cost <= limit)
-- ARGV[3]: milliseconds from now until the current window ends
-- returns: {allowed (1|0), remaining, retry_after_ms, reset_after_ms}
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local left = tonumber(ARGV[3])

local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + cost > limit then
    -- a denied request takes nothing, so a large request cannot lock out small ones
    return {0, limit - used, left, left}
end
used = redis.call('INCRBY', KEYS[1], cost)
-- the TTL is set by the same script as the increment: no crash can fall between them
redis.call('PEXPIRE', KEYS[1], left)
return {1, limit - used, 0, left}
