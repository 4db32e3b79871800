-- KEYS[1]: the account's balance (string holding an integer; missing counts as 0)
-- KEYS[2]: the account's total spent (string holding an integer)
-- ARGV[1]: amount to deduct (a positive integer)
-- returns: {deducted (1|0), balance after}
local amount = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
if balance < amount then
    -- insufficient: nothing is written, exactly like a transaction that was never sent
    return {0, balance}
end
-- no other command runs between the GET above and these writes, so no WATCH and no retry
balance = redis.call('DECRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
return {1, balance}
