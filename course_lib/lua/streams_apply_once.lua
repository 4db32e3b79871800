-- KEYS[1]: the set of ids already applied (set)
-- KEYS[2]: the total the message adds to (string holding a number)
-- ARGV[1]: the message's stream id
-- ARGV[2]: the amount to add
-- returns: 1 if the amount was added, 0 if this id had been applied before (nothing changes)
-- Marking the id and applying the effect in one step: a worker that dies between the two can
-- neither leave an id marked whose effect never happened nor an effect whose id is unmarked.
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
return 1
