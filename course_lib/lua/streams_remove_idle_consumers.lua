-- KEYS[1]: the stream (stream with the consumer group)
-- ARGV[1]: the consumer group
-- ARGV[2]: the minimum idle time, in milliseconds, of a consumer to remove
-- returns: the names of the consumers removed (idle at least ARGV[2] ms and holding no pending entry)
-- One script, so no consumer can read (and take pending entries) between the check and the removal.
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
