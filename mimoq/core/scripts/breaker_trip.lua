-- breaker_trip.lua (after breaker_now.lua; worker/accounts/breaker.py)
-- KEYS: state, paused set. ARGV: name, reason, error_type, status, base interval, the
-- channel the paused set's changes are published on (worker/accounts/paused_view.py).
-- Returns 1 when this call opened the breaker, 0 when it was open already.
if redis.call('HEXISTS', KEYS[1], 'since') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'since', tostring(now), 'reason', ARGV[2], 'error_type', ARGV[3],
  'status', ARGV[4], 'interval', ARGV[5], 'probe_at', tostring(now + tonumber(ARGV[5])),
  'probes', 0)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[1])
return 1
