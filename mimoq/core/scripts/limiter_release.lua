-- release: a call ended. Free its lease, settle its tokens, calibrate, record latency and
-- the grant-to-send lag.
-- ARGV[2]: JSON {lease, estimate (tokens), actual (tokens, -1: unknown), audio (seconds,
-- -1: none), latency (seconds, -1: unknown), lag (seconds from grant to send, -1: unknown)}.
-- Returns 1 if the lease was held.

local R = cjson.decode(ARGV[2])
local lease_id = R.lease
local estimate = tonumber(R.estimate)
local actual = tonumber(R.actual)
local audio_s = tonumber(R.audio)
local latency = tonumber(R.latency)
local lag = tonumber(R.lag)
-- EWMA weights: the token rate follows the last ~5 calls, latency and lag the last ~10
local RATE_ALPHA = 0.2
local LAT_ALPHA = 0.1

local now = now_s()
local held = redis.call('ZREM', LEASES, lease_id)
local st = load_state()

if Q.tokens > 0 and actual >= 0 then
  -- the guard must count what MiMo counted, not what we guessed
  if redis.call('ZSCORE', LOG, lease_id) then redis.call('HSET', TOKENS, lease_id, actual) end
  -- debit (or credit) the schedule by the difference, as if the slot had been sized right;
  -- a credit never pulls the schedule's end in front of a queued ticket
  local f = factor(st, now)
  local shift = slot_length(f, actual) - slot_length(f, estimate)
  if shift ~= 0 and st.tat > 0 then
    local last = redis.call('ZREVRANGE', TICKETS, 0, 0, 'WITHSCORES')
    local floor = 0
    if #last > 0 then floor = tonumber(last[2]) + spacing(f) end
    st.tat = math.max(st.tat + shift, floor)
    redis.call('HSET', STATE, 'tat', fmt(st.tat))
  end
  if audio_s > 0 then
    local observed = (actual - Q.call_tokens) / audio_s
    if observed > 0 then
      st.tok_rate = st.tok_rate + RATE_ALPHA * (observed - st.tok_rate)
      redis.call('HSET', STATE, 'tok_rate', fmt(st.tok_rate))
      -- tickets queued at the old estimate are re-spaced once it has moved enough
      replan_if_drifted(st, f, now)
    end
  end
end

-- An EWMA and its mean deviation, as two state fields.
local function ewma(field, dev_field, value, old, old_dev)
  if old == nil then
    redis.call('HSET', STATE, field, fmt(value), dev_field, 0)
  else
    local dev = old_dev + LAT_ALPHA * (math.abs(value - old) - old_dev)
    redis.call('HSET', STATE, field, fmt(old + LAT_ALPHA * (value - old)), dev_field, fmt(dev))
  end
end

if latency >= 0 then ewma('lat', 'lat_dev', latency, st.lat, st.lat_dev) end
if lag >= 0 then ewma('lag', 'lag_dev', lag, st.lag, st.lag_dev) end
touch(st, now)
return held
