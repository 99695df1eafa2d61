-- The shared limit's state, one set of keys per limit, all with the same hash
-- tag so that a Redis Cluster keeps them in one slot:
--   KEYS[1] held     ZSET  lease id -> expiry (ms, Redis clock)
--   KEYS[2] leases   HASH  lease id -> msgpack(cost, client cost, tool, client)
--   KEYS[3] use      HASH  'n' -> slots in use; 't'..tool -> calls; 'c'..client -> client slots
--   KEYS[4] queue    ZSET  member -> fair tag (member = 16 hex digits of arrival, then the id)
--   KEYS[5] deadline ZSET  waiter id -> give-up time (ms, Redis clock)
--   KEYS[6] waiters  HASH  waiter id -> msgpack(cost, client cost, tool, client,
--                          tool limit, client limit, lease ms, channel, member, tag,
--                          process)
--   KEYS[7] fair     HASH  '' -> virtual time; '#' -> arrival counter;
--                          'f'..client -> the client's last tag; 'n'..client -> its waiters
--   KEYS[8] members  ZSET  process id -> expiry (ms): the replicas alive
-- The tool field is '' for a call without a tool name and ':'..name otherwise.
-- Every count changes only inside these scripts, each atomic; time is read
-- from Redis (TIME), never from a client's clock.
local HELD, LEASES, USE, QUEUE, DEADLINE, WAITERS, FAIR, MEMBERS =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]

-- At most this many expired entries are swept, and this many queue heads
-- examined, per call: every script's work is bounded.
local SWEEP = 64
local SCAN = 128

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(v)
    return tonumber(v) or 0
end

local function in_use()
    return num(redis.call('HGET', USE, 'n'))
end

local function bump(field, by)
    if by == 0 then return end
    if redis.call('HINCRBY', USE, field, by) <= 0 then
        redis.call('HDEL', USE, field)
    end
end

local function count(cost, ccost, tool, client, sign)
    bump('n', sign * cost)
    bump('t' .. tool, sign)
    bump('c' .. client, sign * ccost)
end

-- The scope that holds a call back ('tool', 'client', 'global'), or nil.
local function holds_back(cost, ccost, tool, client, tlim, clim, limit, used)
    if tlim > 0 and num(redis.call('HGET', USE, 't' .. tool)) + 1 > tlim then
        return 'tool'
    end
    if clim > 0 and num(redis.call('HGET', USE, 'c' .. client)) + ccost > clim then
        return 'client'
    end
    if used + cost > limit then
        return 'global'
    end
    return nil
end

-- The process part of a lease or waiter id ('PROCESS:N').
local function process_of(id)
    return string.match(id, '^([^:]*)')
end

-- A process that asks is alive: its membership lasts at least a lease.
local function seen(process, lease_ms, now)
    redis.call('ZADD', MEMBERS, 'GT', now + lease_ms, process)
end

local function grant(id, cost, ccost, tool, client, lease_ms, now)
    -- A lease never outlives its process's membership: a process that dies
    -- right after a slot was handed to one of its waiters holds it no longer
    -- than its other leases.
    local until_ms = now + lease_ms
    local alive = tonumber(redis.call('ZSCORE', MEMBERS, process_of(id)))
    if alive and alive >= now and alive < until_ms then until_ms = alive end
    redis.call('ZADD', HELD, until_ms, id)
    redis.call('HSET', LEASES, id, cmsgpack.pack(cost, ccost, tool, client))
    count(cost, ccost, tool, client, 1)
end

-- Frees a lease; false if it was not held (released twice, or expired).
local function drop_lease(id)
    local rec = redis.call('HGET', LEASES, id)
    redis.call('ZREM', HELD, id)
    if not rec then return false end
    redis.call('HDEL', LEASES, id)
    local cost, ccost, tool, client = cmsgpack.unpack(rec)
    count(cost, ccost, tool, client, -1)
    return true
end

-- A client's waiter left the queue: a client with none left is forgotten
-- (its next call starts at the fair clock, as a newcomer).
local function client_left(client)
    if redis.call('HINCRBY', FAIR, 'n' .. client, -1) <= 0 then
        redis.call('HDEL', FAIR, 'n' .. client, 'f' .. client)
    end
end

-- Takes a waiter out of the queue; false if it was not queued.
local function drop_waiter(id)
    local rec = redis.call('HGET', WAITERS, id)
    redis.call('ZREM', DEADLINE, id)
    if not rec then return false end
    redis.call('HDEL', WAITERS, id)
    local _, _, _, client, _, _, _, _, member = cmsgpack.unpack(rec)
    redis.call('ZREM', QUEUE, member)
    client_left(client)
    return true
end

-- Whether a process renewed its membership within its lease.
local function alive(process, now)
    local until_ms = tonumber(redis.call('ZSCORE', MEMBERS, process))
    return until_ms ~= nil and until_ms >= now
end

-- Sweeps leases whose holder stopped renewing them and waiters whose owner
-- stopped waiting; returns the number of leases swept.
local function expire(now)
    local gone = redis.call('ZRANGEBYSCORE', HELD, '-inf', '(' .. now, 'LIMIT', 0, SWEEP)
    for _, id in ipairs(gone) do drop_lease(id) end
    local late = redis.call('ZRANGEBYSCORE', DEADLINE, '-inf', '(' .. now, 'LIMIT', 0, SWEEP)
    for _, id in ipairs(late) do drop_waiter(id) end
    if redis.call('ZCARD', QUEUE) == 0 then
        -- An empty queue restarts the fair clock (and forgets every client).
        redis.call('DEL', FAIR)
    end
    return #gone
end

-- Hands free slots to waiters in fair order: the lowest tag first, skipping
-- waiters held back by their own tool's or client's limit, and stopping at
-- the first one the global limit holds back (so a heavy call is never
-- starved by lighter ones behind it). Each waiter served is told on its
-- process's channel. Returns true when a waiter is stuck on the global limit.
local function serve(now, limit)
    if redis.call('ZCARD', QUEUE) == 0 then return false end
    local used = in_use()
    if used >= limit then return true end
    local heads = redis.call('ZRANGE', QUEUE, 0, SCAN - 1, 'WITHSCORES')
    local vtime = num(redis.call('HGET', FAIR, ''))
    local stalled = false
    for i = 1, #heads, 2 do
        local member, tag = heads[i], tonumber(heads[i + 1])
        local id = string.sub(member, 17)
        local rec = redis.call('HGET', WAITERS, id)
        if rec then
            local cost, ccost, tool, client, tlim, clim, lease_ms, channel, _, _, process =
                cmsgpack.unpack(rec)
            if not alive(process, now) then
                -- Its process died (stopped renewing): nobody would take the slot.
                drop_waiter(id)
            else
                local scope = holds_back(cost, ccost, tool, client, tlim, clim, limit, used)
                if scope == 'global' then
                    stalled = true
                    break
                end
                if scope == nil then
                    drop_waiter(id)
                    grant(id, cost, ccost, tool, client, lease_ms, now)
                    used = used + cost
                    redis.call('PUBLISH', channel, id)
                    if tag > vtime then vtime = tag end
                end
            end
        else
            redis.call('ZREM', QUEUE, member)
        end
    end
    if redis.call('ZCARD', QUEUE) == 0 then
        redis.call('DEL', FAIR)
    else
        redis.call('HSET', FAIR, '', vtime)
    end
    return stalled
end

-- Makes the counts agree with the leases again: drops lease records without
-- an expiry and expiries without a record (keys evicted, or written by a
-- failover's lost writes), then recounts 'use' from the records. O(leases).
local function reconcile()
    local ids = redis.call('HKEYS', LEASES)
    for _, id in ipairs(ids) do
        if not redis.call('ZSCORE', HELD, id) then
            redis.call('HDEL', LEASES, id)
        end
    end
    local expiries = redis.call('ZRANGE', HELD, 0, -1)
    if #expiries ~= redis.call('HLEN', LEASES) then
        for _, id in ipairs(expiries) do
            if redis.call('HEXISTS', LEASES, id) == 0 then
                redis.call('ZREM', HELD, id)
            end
        end
    end
    redis.call('DEL', USE)
    local records = redis.call('HVALS', LEASES)
    for _, rec in ipairs(records) do
        local cost, ccost, tool, client = cmsgpack.unpack(rec)
        count(cost, ccost, tool, client, 1)
    end
end
