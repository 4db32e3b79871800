-- KEYS[1]: the session (hash with at least the field _deadline, in ms since the epoch)
-- ARGV[1]: now, in milliseconds since the epoch
-- ARGV[2]: the idle timeout in milliseconds
-- ARGV[3]: the field holding a comma-separated list (e.g. data:cart)
-- ARGV[4]: the item to append (no comma)
-- returns: the list after the append, or false (nil) if there is no live session (nothing written)
-- Read, append and write in one step: two requests appending at once both keep their item,
-- where reading the list into the app and writing it back would lose one of them.
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local deadline = tonumber(redis.call('HGET', KEYS[1], '_deadline'))
if not deadline or deadline <= now then
    return false
end
local list = redis.call('HGET', KEYS[1], ARGV[3])
if list and list ~= '' then
    list = list .. ',' .. ARGV[4]
else
    list = ARGV[4]
end
redis.call('HSET', KEYS[1], ARGV[3], list)
redis.call('PEXPIRE', KEYS[1], math.min(idle, deadline - now))
return list
