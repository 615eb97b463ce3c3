-- release: a call ended. Free its lease, settle its tokens, calibrate, record latency and
-- the grant-to-send lag.
-- ARGV[2]: JSON {lease, estimate (tokens), actual (tokens, -1: unknown), audio (seconds,
-- -1: none), latency (seconds, -1: unknown), lag (seconds from grant to send, -1: unknown)}.
-- Returns 1 if the lease was held.

bind(KEYS, ARGV)
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
-- every state field this call changes, written with one HSET at the end (field, value, ...)
local writes = {}
local function put(field, value)
  writes[#writes + 1] = field
  writes[#writes + 1] = value
end
local tat_moved = false

if Q.tokens > 0 and actual >= 0 then
  -- the guard must count what MiMo counted, not what we guessed
  if redis.call('ZSCORE', LOG, lease_id) then redis.call('HSET', TOKENS, lease_id, actual) end
  -- debit (or credit) the schedule by the difference, as if the slot had been sized right;
  -- a credit never pulls the schedule's end in front of a queued ticket
  local f = factor(st, now)
  local shift = slot_length(f, actual) - slot_length(f, estimate)
  if shift ~= 0 and st.tat > 0 then
    local last = last_ticket()
    local floor = 0
    if #last > 0 then floor = tonumber(last[2]) + spacing(f) end
    st.tat = math.max(st.tat + shift, floor)
    tat_moved = true
  end
  if audio_s > 0 then
    local observed = (actual - Q.call_tokens) / audio_s
    if observed > 0 then
      st.tok_rate = st.tok_rate + RATE_ALPHA * (observed - st.tok_rate)
      put('tok_rate', fmt(st.tok_rate))
      -- tickets queued at the old estimate are re-spaced once it has moved enough (a
      -- re-plan writes the schedule's end itself, from st.tat: the shift above included)
      if drifted(f, st.plan_f) or drifted(st.tok_rate, st.plan_rate) then
        replan(st, f, now)
        tat_moved = false
      end
    end
  end
end
if tat_moved then put('tat', fmt(st.tat)) end

-- An EWMA and its mean deviation, as two state fields.
local function ewma(field, dev_field, value, old, old_dev)
  if old == nil then
    put(field, fmt(value))
    put(dev_field, 0)
  else
    put(field, fmt(old + LAT_ALPHA * (value - old)))
    put(dev_field, fmt(old_dev + LAT_ALPHA * (math.abs(value - old) - old_dev)))
  end
end

if latency >= 0 then ewma('lat', 'lat_dev', latency, st.lat, st.lat_dev) end
if lag >= 0 then ewma('lag', 'lag_dev', lag, st.lag, st.lag_dev) end
if #writes > 0 then redis.call('HSET', STATE, unpack(writes)) end
touch(st, now)
return held
