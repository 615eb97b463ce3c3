-- acquire: grant one MiMo call now, or say when to come back (holding a ticket when queued;
-- a ticket more than HORIZON ahead is re-read half-way there).
-- ARGV after the quota: job_id, lease_id, audio seconds (token-limited models only).
-- Returns {decision, wait_s, tokens charged, now}.

local job_id, lease_id = ARGV[NCOMMON + 1], ARGV[NCOMMON + 2]
local audio_s = tonumber(ARGV[NCOMMON + 3])
-- a ticket holder back this little before its slot is served (arq rounds defers to ms)
local EARLY = 0.002
-- a guard wait is stretched by this so the blocking grant has surely left the window
local EPSILON = 0.002

local now = now_s()
housekeep(now)
local st = load_state()
local f = factor(st, now)
-- the rate recovering after a 429 (or a new calibration) re-spaces the queue
replan_if_drifted(st, f, now)
local cost = call_cost(st.tok_rate, audio_s)
local per_request = spacing(f)
local len = slot_length(f, cost)

-- Seconds until one more grant of `cost` tokens fits the hard guard: at most the quota
-- (scaled down by the AIMD factor) in any GUARD-long window of actual grant times.
local function guard_wait()
  local log = redis.call('ZRANGE', LOG, 0, -1, 'WITHSCORES')
  local n = #log / 2
  local wait = 0
  local cap = math.max(1, math.floor(Q.requests * f + 1e-9))
  if n + 1 > cap then
    -- the (n + 1 - cap) oldest grants must leave the window first
    wait = tonumber(log[2 * (n + 1 - cap)]) + GUARD - now
  end
  if Q.tokens > 0 and n > 0 then
    local tcap = math.max(1, math.floor(Q.tokens * f + 1e-9))
    local ids = {}
    for i = 1, n do ids[i] = log[2 * i - 1] end
    local charged = tokens_of(ids)
    local used = 0
    for i = 1, n do used = used + charged[i] end
    local i = 0
    -- a call larger than the whole quota still goes once the window is empty
    while i < n and used + cost > tcap do
      i = i + 1
      used = used - charged[i]
    end
    if i > 0 then wait = math.max(wait, tonumber(log[2 * i]) + GUARD - now) end
  end
  if wait > 0 then wait = wait + EPSILON end
  return wait
end

local function in_flight_wait()
  -- with the cap reached, one call ends about every latency / cap seconds
  local latency = st.lat or 1
  return math.min(math.max(latency / Q.max_in_flight, 0.05), 5)
end

local function grant()
  redis.call('ZADD', LOG, now, lease_id)
  if cost > 0 then redis.call('HSET', TOKENS, lease_id, cost) end
  redis.call('ZADD', LEASES, now + Q.lease_ttl, lease_id)
  touch()
  return {'granted', fmt(0), cost, fmt(now)}
end

local function defer(wait, reason)
  touch()
  return {reason, fmt(wait), cost, fmt(now)}
end

local full = Q.max_in_flight > 0 and redis.call('ZCARD', LEASES) >= Q.max_in_flight

local ticket = tonumber(redis.call('ZSCORE', TICKETS, job_id))
if ticket then
  -- a job that was queued earlier: its slot is already paid for in the schedule
  local due = math.max(ticket, st.cd)
  if due - now > EARLY then
    local reason = 'ticket'
    if st.cd > now then reason = 'cooldown' end
    return defer(come_back_in(due - now), reason)
  end
  if full then return defer(in_flight_wait(), 'in_flight') end
  local wait = guard_wait()
  if wait > 0 then return defer(wait, 'guard') end
  redis.call('ZREM', TICKETS, job_id)
  redis.call('HDEL', TICKET_AUDIO, job_id)
  return grant()
end

-- No slot is reserved while the in-flight cap is full: it would pass unused.
if full then return defer(in_flight_wait(), 'in_flight') end

-- GCRA: the next free slot is `tat`; `burst - 1` slots may be taken early after idling.
local start = math.max(st.tat - (Q.burst - 1) * per_request, now, st.cd)
if start <= now then
  local wait = guard_wait()
  if wait <= 0 then
    redis.call('HSET', STATE, 'tat', math.max(st.tat, now) + len)
    return grant()
  end
  start = now + wait
end
-- Queue: reserve the slot for this job, so it is served at `start` ahead of later arrivals.
redis.call('ZADD', TICKETS, fmt(start), job_id)
-- what a re-plan needs to re-size the slot
if Q.tokens > 0 then redis.call('HSET', TICKET_AUDIO, job_id, fmt(audio_s)) end
redis.call('HSET', STATE, 'tat', fmt(math.max(st.tat, start) + len))
local reason = 'ticket'
if st.cd > now then reason = 'cooldown' end
return defer(come_back_in(start - now), reason)
