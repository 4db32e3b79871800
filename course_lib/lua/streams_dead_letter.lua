-- KEYS[1]: the stream the entry is pending in (stream with the consumer group)
-- KEYS[2]: the dead-letter stream (stream, or no key yet)
-- ARGV[1]: the consumer group
-- ARGV[2]: the entry's id
-- ARGV[3]: how many times it was delivered
-- ARGV[4..]: the entry's fields and values, alternating
-- returns: 1 if the entry was copied and acknowledged, 0 if it was not pending (nothing written)
-- A script does not roll back: a write stays when a later command fails. So every check runs
-- before the first write, and the write that could still fail (XADD) runs before XACK: an entry
-- is never acknowledged without its copy.
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE the dead-letter key holds a ' .. kind .. ', not a stream')
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
    return 0
end
local copy = {KEYS[2], '*'}
for i = 4, #ARGV do
    copy[#copy + 1] = ARGV[i]
end
for _, extra in ipairs({'original_id', ARGV[2], 'deliveries', ARGV[3]}) do
    copy[#copy + 1] = extra
end
redis.call('XADD', unpack(copy))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
