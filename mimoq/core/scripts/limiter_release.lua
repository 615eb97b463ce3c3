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
-- (every state field these calls change is written with one HSET at the end: state_write)
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
  state_write(field, st[field], dev_field, st[dev_field])
end

-- The weight of a call in token_fit's moments (about the last 20 calls).
local FIT_ALPHA = 0.1
-- token_fit fits a line once the calls' audio varies by this share of its mean (a deviation).
local FIT_SPREAD = 0.1

-- A call's tokens against its audio seconds, as a line fitted by exponentially weighted
-- least squares: the mean audio and tokens and their (co)variance, kept as the state's text
-- field `rg`. Once the lengths vary, the line's intercept is the model's tokens besides the
-- audio's (st.tok_base) and its slope the tokens per audio second, both through the mean
-- call, so the typical call's estimate is the typical call's tokens. A fixed intercept
-- (Q.call_tokens) put every other token of a call on its audio: where a transcript's text
-- tokens do not grow with the audio, short clips measured a higher rate than long ones, and
-- on lengths from 2.4 to 45.6 s the typical call was estimated 10 % over its tokens, and
-- its slots as much too long (issue #22). With one length (no spread) the rate alone moves.
local function token_fit(audio_s, tokens)
  local m = {}
  if st.rg ~= nil then
    for x in string.gmatch(st.rg, '[^,]+') do m[#m + 1] = tonumber(x) end
  end
  local a, t, aa, at = m[1], m[2], m[3], m[4]
  if at == nil then
    a, t, aa, at = audio_s, tokens, 0, 0
  else
    local da, dt = audio_s - a, tokens - t
    a, t = a + FIT_ALPHA * da, t + FIT_ALPHA * dt
    aa = (1 - FIT_ALPHA) * (aa + FIT_ALPHA * da * da)
    at = (1 - FIT_ALPHA) * (at + FIT_ALPHA * da * dt)
  end
  st.rg = table.concat({fmt(a), fmt(t), fmt(aa), fmt(at)}, ',')
  state_write('rg', st.rg)
  if aa > (FIT_SPREAD * a) ^ 2 and at > 0 then
    -- through the mean call; an intercept below zero or above the mean call's tokens is
    -- noise, not a measure: clamped, the slope still meets the mean call
    local base = math.min(math.max(t - at / aa * a, 0), t)
    st.tok_base = base
    st.tok_rate = (t - base) / a
    st.lump = t + 2 * st.tok_rate * math.sqrt(aa)
    state_write('tok_base', base, 'lump', st.lump)
  elseif st.lump ~= nil and st.lump ~= 0 then
    -- the lengths no longer vary: no room is kept for a large call (slot_length)
    st.lump = 0
    state_write('lump', 0)
  end
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
    local shift = slot_length(f, actual, st) - slot_length(f, estimate, st)
    if shift ~= 0 and st.tat > 0 then
      local last = last_ticket()
      local floor = 0
      local per_request = spacing(f)
      if #last > 0 then floor = tonumber(last[2]) + per_request end
      st.tat = settle_shift(st, st.tat, shift, floor, per_request, now)
      tat_moved = true
    end
    if audio_s > 0 then
      local observed = (actual - (st.tok_base or Q.call_tokens)) / audio_s
      if observed > 0 then
        st.tok_rate = st.tok_rate + RATE_ALPHA * (observed - st.tok_rate)
        token_fit(audio_s, actual)
        state_write('tok_rate', st.tok_rate)
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
if tat_moved then state_write('tat', st.tat, 'owed', st.owed) end
touch(st, now)
return held
