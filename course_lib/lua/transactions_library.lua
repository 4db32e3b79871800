#!lua name=course_transactions
-- KEYS[1]: a balance (string holding an integer; missing counts as 0); KEYS[2], ... more balances
-- ARGV: none
-- returns: course_total: the sum of the balances; an error reply starting "NOTABALANCE" if a key
--          holds anything but an integer of at most 15 digits
-- A function library (FUNCTION LOAD): the server keeps it with its data (RDB, AOF, replicas),
-- unlike a script sent with EVAL or SCRIPT LOAD, which lives in a cache a restart empties.
local function total(KEYS, ARGV)
    local sum = 0
    for i = 1, #KEYS do
        local value = redis.call('GET', KEYS[i]) or '0'
        local digits = string.match(value, '^-?(%d+)$')
        if not digits or #digits > 15 then
            return redis.error_reply('NOTABALANCE ' .. KEYS[i] .. ' does not hold an integer balance')
        end
        sum = sum + tonumber(value)
    end
    return sum
end

-- no-writes: it may run where writes are refused, on a replica, and through FCALL_RO
redis.register_function{function_name = 'course_total', callback = total, flags = {'no-writes'}}
