-- ADOPT lease_ms id cost ccost tool client : counts again a call that still
-- runs but whose lease Redis lost, without checking any limit (it runs
-- whatever Redis says; counting it keeps new admissions from exceeding the
-- limit at the upstream). Returns 1 when added, 0 when already held.
local lease_ms, id = tonumber(ARGV[1]), ARGV[2]
local now = now_ms()
if redis.call('ZSCORE', HELD, id) then return 0 end
grant(id, tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6], lease_ms, now)
return 1
