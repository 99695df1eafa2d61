-- CANCEL limit id... : the owners of these waiters stop waiting. For each
-- id: 0 when it was still queued (now gone), 1 when a slot was already
-- handed to it (its owner now holds that lease), -1 when it is unknown
-- (expired, or never queued).
local limit = tonumber(ARGV[1])
local now = now_ms()
expire(now)
local out = {}
local dropped = false
for i = 2, #ARGV do
    local id = ARGV[i]
    if drop_waiter(id) then
        out[#out + 1] = 0
        dropped = true
    elseif redis.call('ZSCORE', HELD, id) then
        out[#out + 1] = 1
    else
        out[#out + 1] = -1
    end
end
if dropped then
    -- One of them may have been the waiter everyone else was stuck behind.
    serve(now, limit)
end
return out
