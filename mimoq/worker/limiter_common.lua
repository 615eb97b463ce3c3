-- Shared prelude of every limiter script (worker/limiter.py prepends it to each one).
--
-- KEYS (worker.limiter_config.KEY_PARTS): 1 state hash, 2 grant log (zset lease -> time),
-- 3 tokens charged per logged lease (hash), 4 tickets (zset job -> reserved slot time),
-- 5 in-flight leases (zset lease -> expiry), 6 audio seconds of each ticket (hash job ->
-- seconds; token-limited models only).
-- ARGV 1..13: the quota (see worker/limiter.py _quota_args); script-specific ARGV follow.
-- Times are seconds from Redis TIME: one clock for the whole fleet.

local STATE, LOG, TOKENS, TICKETS, LEASES, TICKET_AUDIO =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local Q = {
  requests = tonumber(ARGV[1]),
  tokens = tonumber(ARGV[2]),          -- 0: no token limit
  window = tonumber(ARGV[3]),
  target = tonumber(ARGV[4]),
  margin = tonumber(ARGV[5]),
  burst = tonumber(ARGV[6]),
  max_in_flight = tonumber(ARGV[7]),   -- 0: no cap
  lease_ttl = tonumber(ARGV[8]),
  ticket_grace = tonumber(ARGV[9]),
  recovery = tonumber(ARGV[10]),
  call_tokens = tonumber(ARGV[11]),
  tokens_per_s = tonumber(ARGV[12]),
  key_ttl = tonumber(ARGV[13]),
}
local NCOMMON = 13
-- the hard guard's window: MiMo's window plus the spread between our grant and its receipt
local GUARD = Q.window + Q.margin
-- the AIMD factor never drops below this share of the target
local MIN_FACTOR = 0.05
-- the queue is re-planned once the rate factor or the token calibration it was planned
-- for is off by more than this share
local REPLAN_DRIFT = 0.05
-- a reserved slot further ahead than this is a place in the queue more than a time: its
-- holder comes back half-way there and reads the slot again (a re-plan may have moved it)
local HORIZON = Q.window

-- unpack() has a small stack limit: pass long argument lists in chunks
local CHUNK = 500

-- The numbers a hash holds for each id (0 when it holds none).
local function numbers_of(hash, ids)
  local out = {}
  for i = 1, #ids, CHUNK do
    local part = redis.call('HMGET', hash, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #part do out[i + j - 1] = tonumber(part[j]) or 0 end
  end
  return out
end

-- Tokens charged to each lease id (0 when none was recorded).
local function tokens_of(ids)
  return numbers_of(TOKENS, ids)
end

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Lua numbers returned to Redis are truncated to integers: send floats as text.
local function fmt(x)
  return string.format('%.17g', x)
end

local function load_state()
  local v = redis.call('HMGET', STATE, 'tat', 'f', 'f_at', 'cd', 'tok_rate', 'lat', 'lat_dev',
    'n429', 'plan_f', 'plan_rate')
  return {
    tat = tonumber(v[1]) or 0,
    f = tonumber(v[2]) or 1,
    f_at = tonumber(v[3]) or 0,
    cd = tonumber(v[4]) or 0,
    tok_rate = tonumber(v[5]) or Q.tokens_per_s,
    lat = tonumber(v[6]),
    lat_dev = tonumber(v[7]) or 0,
    n429 = tonumber(v[8]) or 0,
    -- the rate factor and token calibration the queued tickets were spaced for
    plan_f = tonumber(v[9]),
    plan_rate = tonumber(v[10]),
  }
end

-- The AIMD factor now: the stored value plus the additive recovery since it was set.
local function factor(st, now)
  local f = st.f
  if now > st.f_at then
    f = f + Q.recovery * (now - st.f_at) / Q.window
  end
  if f > 1 then f = 1 end
  return f
end

-- Seconds between slots of one request, and per token, at the current factor.
local function spacing(f)
  local per_request = Q.window / (Q.requests * Q.target * f)
  local per_token = 0
  if Q.tokens > 0 then per_token = Q.window / (Q.tokens * Q.target * f) end
  return per_request, per_token
end

-- A call's share of the schedule: whichever of its request and token costs is longer.
local function slot_length(f, cost)
  local per_request, per_token = spacing(f)
  return math.max(per_request, cost * per_token)
end

-- The tokens a call with `audio` seconds is estimated at (0 without a token limit).
local function call_cost(rate, audio)
  if Q.tokens <= 0 then return 0 end
  return math.ceil(Q.call_tokens + rate * audio)
end

-- How long a job told to come back for a slot `wait` seconds ahead is deferred.
local function come_back_in(wait)
  if wait > HORIZON then return wait / 2 end
  return wait
end

-- Re-space the queued tickets for the rate factor `f` and the current token calibration,
-- keeping their order and the head's time: a queue planned at a 429's lower rate, or
-- with an uncalibrated token estimate, would otherwise stay too sparse until it drained.
local function replan(st, f, now)
  local tickets = redis.call('ZRANGE', TICKETS, 0, -1, 'WITHSCORES')
  local n = #tickets / 2
  if n > 0 then
    local ids = {}
    for i = 1, n do ids[i] = tickets[2 * i - 1] end
    local audio = numbers_of(TICKET_AUDIO, ids)
    local t = math.max(tonumber(tickets[2]), now)
    for i = 1, n, CHUNK do
      local args = {}
      for j = i, math.min(i + CHUNK - 1, n) do
        args[#args + 1] = fmt(t)
        args[#args + 1] = ids[j]
        t = t + slot_length(f, call_cost(st.tok_rate, audio[j]))
      end
      redis.call('ZADD', TICKETS, unpack(args))
    end
    st.tat = t
    redis.call('HSET', STATE, 'tat', fmt(t))
  end
  st.plan_f, st.plan_rate = f, st.tok_rate
  redis.call('HSET', STATE, 'plan_f', fmt(f), 'plan_rate', fmt(st.tok_rate))
end

local function drifted(value, planned)
  return planned == nil or math.abs(value - planned) > REPLAN_DRIFT * planned
end

-- Re-plan the queue when the rate it was planned for is no longer the rate.
local function replan_if_drifted(st, f, now)
  if drifted(f, st.plan_f) or (Q.tokens > 0 and drifted(st.tok_rate, st.plan_rate)) then
    replan(st, f, now)
  end
end

-- Drop what no decision needs any more: grants older than the guard window, expired
-- leases (their worker died), tickets nobody claimed in time.
local function housekeep(now)
  local old = redis.call('ZRANGEBYSCORE', LOG, '-inf', now - GUARD)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', LOG, '-inf', now - GUARD)
    for i = 1, #old, CHUNK do
      redis.call('HDEL', TOKENS, unpack(old, i, math.min(i + CHUNK - 1, #old)))
    end
  end
  redis.call('ZREMRANGEBYSCORE', LEASES, '-inf', now)
  local stale = redis.call('ZRANGEBYSCORE', TICKETS, '-inf', now - Q.ticket_grace)
  if #stale > 0 then
    redis.call('ZREMRANGEBYSCORE', TICKETS, '-inf', now - Q.ticket_grace)
    for i = 1, #stale, CHUNK do
      redis.call('HDEL', TICKET_AUDIO, unpack(stale, i, math.min(i + CHUNK - 1, #stale)))
    end
  end
end

local function touch()
  for i = 1, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], Q.key_ttl) end
  end
end
