-- KEYS[1]: the theoretical arrival time (TAT), string "<ms>:<part>" (ms + part/limit); missing: no debt
-- ARGV[1]: now, in milliseconds since the epoch
-- ARGV[2]: limit: units per window (the largest burst)
-- ARGV[3]: window length in milliseconds
-- ARGV[4]: cost: units this request takes (1 <= cost <= limit)
-- returns: {allowed (1|0), remaining, retry_after_ms, reset_after_ms}
-- The TAT is the instant at which every unit taken so far has been earned back: GCRA stores one
-- time where the token bucket stores a level and a time (the two decide alike: see TokenBucket).
-- Durations are counted in units of 1/limit ms: one unit of quota is earned back every window/limit
-- ms, i.e. every `window` of these units, a whole number, so no float is ever stored and every
-- engine computes the same numbers. Absolute times stay in ms (now x limit could exceed 2^53).
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tolerance = limit * window -- the TAT may run at most one window ahead of now

-- debt: how far the TAT lies ahead of now (0 once it is in the past)
local debt = 0
local tat = redis.call('GET', KEYS[1])
if tat then
    local ms, part = string.match(tat, '^(%d+):(%d+)$')
    debt = math.max(0, (tonumber(ms) - now) * limit + tonumber(part))
end

local after = debt + cost * window
if after > tolerance then
    -- nothing to write: the debt shrinks by itself as now moves on
    return {0, math.floor((tolerance - debt) / window), math.ceil((after - tolerance) / limit),
            math.ceil(debt / limit)}
end
-- one value and its TTL in one command: the key vanishes when the TAT is reached (no debt left)
local reset = math.ceil(after / limit)
redis.call('SET', KEYS[1], string.format('%d:%d', now + math.floor(after / limit), after % limit), 'PX', reset)
return {1, math.floor((tolerance - after) / window), 0, reset}
