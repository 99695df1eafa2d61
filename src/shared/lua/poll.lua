-- POLL id... : for each waiter id, 1 when a slot was handed to it, 0 while it
-- is queued, -1 when unknown (expired). A safety net for a wake-up message
-- lost while the connection was down.
local now = now_ms()
expire(now)
local out = {}
for i = 1, #ARGV do
    local id = ARGV[i]
    if redis.call('ZSCORE', HELD, id) then
        out[i] = 1
    elseif redis.call('HEXISTS', WAITERS, id) == 1 then
        out[i] = 0
    else
        out[i] = -1
    end
end
return out
