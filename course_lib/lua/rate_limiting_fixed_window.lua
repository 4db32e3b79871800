-- KEYS[1]: the counter of the current window (string holding an integer)
-- ARGV[1]: limit: units allowed per window
-- ARGV[2]: cost: units this request takes (1 <= cost <= limit)
-- ARGV[3]: milliseconds from now until the current window ends
-- returns: the units used in the window before this request (allowed if that + cost <= limit)
-- One integer, not a table: the caller knows the limit, the cost and when the window ends, and the
-- smallest reply is the cheapest to build, send and parse (this script runs on every request).
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])

-- the allowed case, the common one, costs one command: count first, undo if over
local used = redis.call('INCRBY', KEYS[1], cost)
if used == cost then
    -- the window's first units: the TTL is set in the same script, so no crash can fall in between
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif used > limit then
    -- a denied request takes nothing (so a large one cannot lock out small ones): the two writes
    -- cancel out, and no other command can run between them
    redis.call('DECRBY', KEYS[1], cost)
end
return used - cost
