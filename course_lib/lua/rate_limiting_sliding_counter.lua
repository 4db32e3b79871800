-- KEYS[1]: the previous window's counter (string holding an integer)
-- KEYS[2]: the current window's counter (string holding an integer)
-- ARGV[1]: limit: units allowed in any window (estimated)
-- ARGV[2]: cost: units this request takes (1 <= cost <= limit)
-- ARGV[3]: window length in milliseconds
-- ARGV[4]: milliseconds elapsed since the current window began (0 <= elapsed < window)
-- returns: allowed: {remaining, reset_after_ms}; denied: {remaining, retry_after_ms, reset_after_ms}
-- (an allowed request's retry_after is 0: two elements, not four, make the common reply the cheapest)
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local elapsed = tonumber(ARGV[4])

-- both counters in one command (a missing one is false, i.e. 0)
local counts = redis.call('MGET', KEYS[1], KEYS[2])
local previous = tonumber(counts[1]) or 0
local current = tonumber(counts[2]) or 0

-- the part of the previous window still inside the sliding window, rounded down as `limits` does
local function carried(count, at)
    return math.floor(count * (window - at) / window)
end

-- the first elapsed time (ms) at which carried(count, elapsed) <= need
local function first_at(count, need)
    if count <= need then
        return 0
    end
    return math.floor(window * (count - need - 1) / count) + 1
end

-- milliseconds until nothing counts any more, with `count` units in the current window
local function until_reset(count)
    if count == 0 then
        return math.max(0, first_at(previous, 0) - elapsed)
    end
    return window - elapsed + first_at(count, 0)
end

local estimate = carried(previous, elapsed) + current
if estimate + cost > limit then
    local retry
    if limit - current - cost >= 0 then
        retry = first_at(previous, limit - current - cost) - elapsed
    else
        -- only in the next window, once this window's count has faded enough
        retry = window - elapsed + first_at(current, limit - cost)
    end
    return {limit - estimate, retry, until_reset(current)}
end
if current == 0 then
    -- this window's count still weighs on the next one, so it lives until the next one ends; created
    -- with its TTL in one command (an existing counter already has that TTL: the key names its window)
    redis.call('SET', KEYS[2], cost, 'PX', 2 * window - elapsed)
else
    redis.call('INCRBY', KEYS[2], cost)
end
current = current + cost
return {limit - estimate - cost, until_reset(current)}
