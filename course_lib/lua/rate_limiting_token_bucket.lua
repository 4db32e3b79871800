-- KEYS[1]: the bucket: hash {level, at}; a missing bucket is a full one
-- ARGV[1]: now, in milliseconds since the epoch
-- ARGV[2]: capacity: tokens when full (the limit)
-- ARGV[3]: milliseconds to refill an empty bucket (the window)
-- ARGV[4]: cost: tokens this request takes (1 <= cost <= capacity)
-- returns: {allowed (1|0), remaining, retry_after_ms, reset_after_ms}
-- Levels are integers in units of 1/window token (refill: capacity units per ms), so no float
-- is ever stored and every engine computes the same numbers.
local now = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local full = capacity * window

local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or full
local at = tonumber(state[2]) or now
if now > at then
    level = math.min(full, level + (now - at) * capacity)
    at = now
end

local need = cost * window
if level < need then
    -- nothing to write: the refill is recomputed from the stored level and time next call
    return {0, math.floor(level / window), math.ceil((need - level) / capacity), math.ceil((full - level) / capacity)}
end
level = level - need
-- the bucket is full again after `refill` ms; then it may vanish, since missing means full
local refill = math.ceil((full - level) / capacity)
redis.call('HSET', KEYS[1], 'level', level, 'at', at)
redis.call('PEXPIRE', KEYS[1], refill)
return {1, math.floor(level / window), 0, refill}
