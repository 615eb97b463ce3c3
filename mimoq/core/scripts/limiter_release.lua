-- release: calls ended. Free their leases, settle their tokens, calibrate, record latency
-- and the grant-to-send lag.
-- ARGV[2]: JSON list of the calls, in the order they ended, each {lease, estimate (tokens),
-- actual (tokens, -1: unknown), audio (seconds, -1: none), latency (seconds, -1: unknown),
-- lag (seconds from grant to send, -1: unknown)}. A worker sends the releases of one model
-- that end within a few milliseconds of each other in one call (worker/limiter/releases.py):
-- each is applied as its own call would apply it, in turn, and the state is read and
-- written once for them all.
-- Returns how many of the leases were held.

bind(KEYS, ARGV)
local calls = cjson.decode(ARGV[2])
-- EWMA weights: the token rate follows the last ~5 calls, latency and lag the last ~10
local RATE_ALPHA = 0.2
local LAT_ALPHA = 0.1

local now = now_s()
local st = load_state()
-- every state field these calls change, written with one HSET at the end
local writes = {}
local tat_moved = false

-- An EWMA and its mean deviation, as two state fields (kept in `st` for the next call).
local function ewma(field, dev_field, value)
  local old, old_dev = st[field], st[dev_field]
  if old == nil then
    st[field], st[dev_field] = value, 0
  else
    st[field] = old + LAT_ALPHA * (value - old)
    st[dev_field] = old_dev + LAT_ALPHA * (math.abs(value - old) - old_dev)
  end
  writes[field], writes[dev_field] = st[field], st[dev_field]
end

local function settle(R)
  local estimate, actual = tonumber(R.estimate), tonumber(R.actual)
  local audio_s = tonumber(R.audio)
  if Q.tokens > 0 and actual >= 0 then
    -- the guard must count what MiMo counted, not what we guessed
    if redis.call('ZSCORE', LOG, R.lease) then redis.call('HSET', TOKENS, R.lease, actual) end
    -- debit (or credit) the schedule by the difference, as if the slot had been sized
    -- right; a credit never pulls the schedule's end in front of a queued ticket
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
        writes.tok_rate = st.tok_rate
        -- tickets queued at the old estimate are re-spaced once it has moved enough (a
        -- re-plan writes the schedule's end itself, from st.tat: the shift above included)
        if drifted(f, st.plan_f) or drifted(st.tok_rate, st.plan_rate) then
          replan(st, f, now)
          tat_moved = false
        end
      end
    end
  end
  local latency, lag = tonumber(R.latency), tonumber(R.lag)
  if latency >= 0 then ewma('lat', 'lat_dev', latency) end
  if lag >= 0 then ewma('lag', 'lag_dev', lag) end
end

-- every lease in one ZREM
local leases = {}
for i = 1, #calls do leases[i] = calls[i].lease end
local held = 0
for i = 1, #leases, CHUNK do
  held = held + redis.call('ZREM', LEASES, unpack(leases, i, math.min(i + CHUNK - 1, #leases)))
end
for i = 1, #calls do settle(calls[i]) end
if tat_moved then writes.tat = st.tat end
local flat = {}
for name, value in pairs(writes) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
if #flat > 0 then redis.call('HSET', STATE, unpack(flat)) end
touch(st, now)
return held
