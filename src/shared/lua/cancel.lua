-- CANCEL limit id : a waiter's owner stops waiting. Returns 0 when it was
-- still queued (now gone), 1 when a slot was already handed to it (its owner
-- now holds that lease), -1 when it is unknown (expired).
local limit, id = tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
expire(now)
if drop_waiter(id) then
    -- It may have been the waiter everyone else was stuck behind.
    serve(now, limit)
    return 0
end
if redis.call('ZSCORE', HELD, id) then
    return 1
end
return -1
