-- KEYS[1]: the session (hash with at least the field _deadline, in ms since the epoch)
-- ARGV[1]: now, in milliseconds since the epoch
-- ARGV[2]: the idle timeout in milliseconds
-- ARGV[3..]: field, value, field, value, ... to write
-- returns: 1 if the session was live and is updated, 0 if there is no live session (nothing written)
-- Checking first matters: HSET on a missing key would create a session with no TTL and no owner.
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local deadline = tonumber(redis.call('HGET', KEYS[1], '_deadline'))
if not deadline or deadline <= now then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], math.min(idle, deadline - now))
return 1
