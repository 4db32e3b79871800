-- KEYS[1]: the session (hash)
-- ARGV: none
-- returns: the session's fields and values as a flat list (empty if it did not exist); the session is deleted
-- Read and delete in one step: of two requests rotating the same id at once, only one gets the
-- session, so an old id can never turn into two live sessions.
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
