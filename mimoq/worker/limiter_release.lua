-- release: a call ended. Free its lease, settle its tokens, calibrate, record latency.
-- ARGV after the quota: lease_id, estimated tokens, actual tokens (-1: unknown),
-- audio seconds (-1: none), latency seconds (-1: unknown). Returns 1 if the lease was held.

local lease_id = ARGV[NCOMMON + 1]
local estimate = tonumber(ARGV[NCOMMON + 2])
local actual = tonumber(ARGV[NCOMMON + 3])
local audio_s = tonumber(ARGV[NCOMMON + 4])
local latency = tonumber(ARGV[NCOMMON + 5])
-- EWMA weights: the token rate follows the last ~5 calls, latency the last ~10
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

if latency >= 0 then
  if st.lat == nil then
    redis.call('HSET', STATE, 'lat', latency, 'lat_dev', 0)
  else
    local dev = st.lat_dev + LAT_ALPHA * (math.abs(latency - st.lat) - st.lat_dev)
    redis.call('HSET', STATE, 'lat', st.lat + LAT_ALPHA * (latency - st.lat), 'lat_dev', dev)
  end
end
touch()
return held
