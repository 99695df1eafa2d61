-- ACQUIRE id cost ccost tool client limit tool_limit client_limit queue_size
--         timeout_ms lease_ms channel
-- Admits at once ({1, '', '', in_use, queued}), queues ({2, '', scope, ...})
-- or rejects ({0, reason, scope, ...}). A waiter gives up by itself after
-- timeout_ms plus a grace (its owner normally cancels it first), or as soon
-- as its process stops renewing its membership.
local id, tool, client, channel = ARGV[1], ARGV[4], ARGV[5], ARGV[12]
local cost, ccost = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, tlim, clim = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local queue_size, timeout_ms, lease_ms = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local now = now_ms()
local process = process_of(id)
seen(process, lease_ms, now)
expire(now)
local stalled = serve(now, limit)
local used = in_use()
local scope = holds_back(cost, ccost, tool, client, tlim, clim, limit, used)
if scope == nil and not stalled then
    grant(id, cost, ccost, tool, client, lease_ms, now)
    return {1, '', '', used + cost, redis.call('ZCARD', QUEUE)}
end
scope = scope or 'global'
local queued = redis.call('ZCARD', QUEUE)
if queue_size == 0 then
    return {0, 'concurrency_limit', scope, used, queued}
end
if queued >= queue_size then
    return {0, 'queue_full', 'global', used, queued}
end
local seq = redis.call('HINCRBY', FAIR, '#', 1)
local vtime = num(redis.call('HGET', FAIR, ''))
local last = num(redis.call('HGET', FAIR, 'f' .. client))
local tag = math.max(vtime, last) + 1
redis.call('HSET', FAIR, 'f' .. client, tag)
redis.call('HINCRBY', FAIR, 'n' .. client, 1)
local member = string.format('%016x', seq) .. id
redis.call('ZADD', QUEUE, tag, member)
redis.call('ZADD', DEADLINE, now + timeout_ms + 1000, id)
redis.call('HSET', WAITERS, id,
    cmsgpack.pack(cost, ccost, tool, client, tlim, clim, lease_ms, channel, member, tag, process))
return {2, '', scope, used, queued + 1}
