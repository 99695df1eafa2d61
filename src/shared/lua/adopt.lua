-- ADOPT lease_ms (id cost ccost tool client)... : counts again calls that
-- still run but that Redis does not count (their leases were lost, or they
-- were admitted locally while Redis was unreachable), without checking any
-- limit: they run whatever Redis says, and counting them keeps new
-- admissions from exceeding the limit at the upstream. Returns how many
-- were added.
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local added = 0
for i = 2, #ARGV - 4, 5 do
    local id = ARGV[i]
    if not redis.call('ZSCORE', HELD, id) then
        grant(id, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4], lease_ms, now)
        added = added + 1
    end
end
return added
