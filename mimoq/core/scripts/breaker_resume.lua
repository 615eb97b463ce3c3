-- breaker_resume.lua (worker/accounts/breaker.py)
-- KEYS: state, paused set, 429 run. ARGV: name, the channel the paused set's changes are
-- published on. Returns 1 when it was paused.
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
