-- RENEW process lease_ms limit id... : extends this process's leases and its
-- membership. Returns {replicas alive, lost id...}: the ids no longer held
-- (expired while the process could not renew them, or Redis lost its data).
local process, lease_ms, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
expire(now)
local out = {0}
for i = 4, #ARGV do
    local id = ARGV[i]
    if redis.call('ZSCORE', HELD, id) then
        redis.call('ZADD', HELD, 'XX', now + lease_ms, id)
    else
        out[#out + 1] = id
    end
end
redis.call('ZADD', MEMBERS, now + lease_ms, process)
redis.call('ZREMRANGEBYSCORE', MEMBERS, '-inf', '(' .. now)
out[1] = redis.call('ZCARD', MEMBERS)
serve(now, limit)
return out
