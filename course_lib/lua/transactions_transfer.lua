-- KEYS[1]: the source balance (string holding an integer; missing counts as 0)
-- KEYS[2]: the target balance (string holding an integer; missing counts as 0)
-- ARGV[1]: amount to move (a positive integer)
-- returns: {moved (1|0), source balance after}; an error reply starting "NOTABALANCE", with
--          nothing written, if either key holds anything but an integer of at most 15 digits
--          (a key of another type, a list say, fails its GET with WRONGTYPE: also before any write)
local amount = tonumber(ARGV[1])
local values = {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '0'}
-- A script does not roll back: if the INCRBY below failed after the DECRBY, the money would be
-- gone. So check first that neither write can fail: both hold integers of at most 15 digits,
-- which Lua's numbers (doubles) hold exactly and whose sums cannot overflow INCRBY's 64 bits.
for i = 1, 2 do
    local digits = string.match(values[i], '^-?(%d+)$')
    if not digits or #digits > 15 then
        return redis.error_reply('NOTABALANCE ' .. KEYS[i] .. ' does not hold an integer balance; nothing was moved')
    end
end
local balance = tonumber(values[1])
if balance < amount then
    return {0, balance}
end
-- no other command runs between the GETs above and these writes: no WATCH, no retry
balance = redis.call('DECRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
return {1, balance}
