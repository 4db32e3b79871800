-- KEYS[1]: the lock key, e.g. course:caching:lock:report:42
-- ARGV[1]: the token the holder stored with SET NX PX when it took the lock
-- returns: 1 if the lock was still ours and is now deleted, 0 if it had expired or belongs to someone else
-- GET and DEL in one script: between a separate GET and DEL the lock could expire and be taken by
-- another loader, whose lock we would then delete.
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
