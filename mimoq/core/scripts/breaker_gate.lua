-- breaker_gate.lua (after breaker_now.lua; worker/accounts/breaker.py)
-- KEYS: state, paused set. ARGV: probe max, pause max, name, the channel the paused set's
-- changes are published on.
-- Returns {verdict, seconds}: open; probe (this caller holds it; seconds: next interval);
-- paused / expired (seconds until the next probe is due).
local state = redis.call('HMGET', KEYS[1], 'since', 'probe_at', 'interval')
if not state[1] then return {'open', '0'} end
local since, probe_at, interval = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
if not (since and probe_at and interval) or interval <= 0 then
  -- Not a record this module wrote (a foreign or damaged write): drop it, never fail jobs.
  redis.call('DEL', KEYS[1])
  if redis.call('SREM', KEYS[2], ARGV[3]) == 1 then redis.call('PUBLISH', ARGV[4], ARGV[3]) end
  return {'open', '0'}
end
if now >= probe_at then
  interval = math.min(interval * 2, tonumber(ARGV[1]))
  redis.call('HSET', KEYS[1], 'probe_at', tostring(now + interval), 'interval', tostring(interval))
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
  return {'probe', tostring(interval)}
end
if now - since > tonumber(ARGV[2]) then return {'expired', tostring(probe_at - now)} end
return {'paused', tostring(probe_at - now)}
