-- RENEW process lease_ms limit id... : extends this process's leases and its
-- membership (before anything is swept: a renewal that arrives late, behind
-- a stalled Redis, still counts if nobody swept the leases yet), sweeps,
-- makes the counts agree with the leases, and hands out what is free.
-- Returns {replicas alive, in_use, queued, lost id...}: the ids no longer
-- held (expired while the process could not renew them, or Redis lost them).
local process, lease_ms, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {0, 0, 0}
redis.call('ZADD', MEMBERS, now + lease_ms, process)
for i = 4, #ARGV do
    local id = ARGV[i]
    if redis.call('ZSCORE', HELD, id) and redis.call('HEXISTS', LEASES, id) == 1 then
        redis.call('ZADD', HELD, 'XX', now + lease_ms, id)
    else
        out[#out + 1] = id
    end
end
redis.call('ZREMRANGEBYSCORE', MEMBERS, '-inf', '(' .. now)
expire(now)
reconcile()
serve(now, limit)
out[1] = redis.call('ZCARD', MEMBERS)
out[2] = in_use()
out[3] = redis.call('ZCARD', QUEUE)
return out
