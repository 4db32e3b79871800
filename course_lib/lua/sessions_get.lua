-- KEYS[1]: the session (hash with at least the field _deadline, in ms since the epoch)
-- ARGV[1]: now, in milliseconds since the epoch
-- ARGV[2]: the idle timeout in milliseconds
-- returns: the session's fields and values as a flat list, or an empty list when there is no live session
-- Read and slide in one step: the TTL restarts at the idle timeout, but never past the absolute
-- deadline, and a session past its deadline is deleted rather than returned.
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local deadline = tonumber(redis.call('HGET', KEYS[1], '_deadline'))
if not deadline then
    return {}
end
if deadline <= now then
    redis.call('DEL', KEYS[1])
    return {}
end
redis.call('PEXPIRE', KEYS[1], math.min(idle, deadline - now))
return redis.call('HGETALL', KEYS[1])
