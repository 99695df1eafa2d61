-- ADOPT lease_ms (id cost ccost tool client)... : counts again calls that
-- still run but that Redis does not count (their leases were lost, or they
-- were admitted locally while Redis was unreachable), without checking any
-- limit: they run whatever Redis says, and counting them keeps new
-- admissions from exceeding the limit at the upstream. A call already
-- counted (its record is there) is left as it is. Returns how many were
-- added.
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local added = 0
for i = 2, #ARGV - 4, 5 do
    local id = ARGV[i]
    if redis.call('HEXISTS', LEASES, id) == 0 then
        redis.call('ZREM', HELD, id)
        grant(id, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4], lease_ms, now)
        added = added + 1
    else
        redis.call('ZADD', HELD, now + lease_ms, id)
    end
end
return added
