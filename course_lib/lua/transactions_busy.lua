-- KEYS[1]: (optional) a key to SET before looping: once a script has written, SCRIPT KILL refuses it
-- ARGV[1]: how many loop passes to make (a billion keep a server busy for seconds)
-- returns: the number of passes made (unless SCRIPT KILL ends the script first)
-- (No clock: TIME inside a script answers the time the script started, on Redis 7 and Valkey alike.)
if #KEYS > 0 then
    redis.call('SET', KEYS[1], 'written')
end
local passes = 0
-- the server runs nothing else meanwhile: every other client waits, then gets BUSY errors
for _ = 1, tonumber(ARGV[1]) do
    passes = passes + 1
end
return passes
