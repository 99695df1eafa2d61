-- RELEASE limit id... : frees the leases (unknown ids are skipped: released
-- twice or already expired) and hands the slots to waiters.
-- Returns {freed, in_use, queued}.
local limit = tonumber(ARGV[1])
local now = now_ms()
expire(now)
local freed = 0
for i = 2, #ARGV do
    if drop_lease(ARGV[i]) then freed = freed + 1 end
end
serve(now, limit)
return {freed, in_use(), redis.call('ZCARD', QUEUE)}
