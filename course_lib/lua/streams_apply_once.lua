-- KEYS[1]: the set of ids already applied (set)
-- KEYS[2]: the total the message adds to, in integer cents (string holding an integer)
-- ARGV[1]: the message's stream id
-- ARGV[2]: the amount to add, in integer cents
-- returns: 1 if the amount was added, 0 if this id had been applied before (nothing changes)
-- A script does not roll back: a write stays when a later command fails. So the checks come
-- first (SISMEMBER fails on a key that is not a set), INCRBY, which refuses a total or an amount
-- that is not an integer, is the first write, and SADD after it can no longer fail: the id is
-- never marked without its effect, nor the effect applied without its id.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
    return 0
end
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[1])
return 1
