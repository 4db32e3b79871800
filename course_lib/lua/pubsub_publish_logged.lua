-- KEYS[1]: the stream that logs every event (stream)
-- ARGV[1]: the channel to publish on (a channel is not a key)
-- ARGV[2]: the event, as JSON text
-- ARGV[3]: the stream's approximate cap (MAXLEN ~)
-- returns: {the new entry's id, how many subscriptions received the message}
-- XADD first, so that the live message carries the entry id: a subscriber that remembers the last
-- id it processed can read what it missed from the stream, and drop what it already has.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[2])
local receivers = redis.call('PUBLISH', ARGV[1], '{"id": "' .. id .. '", "event": ' .. ARGV[2] .. '}')
return {id, receivers}
