-- run_begin.lua (core/runs.py)
-- KEYS: run, pending, active runs. ARGV: run, now, tenant, priority, callback JSON or "",
-- keep ms. A run begun again (``mimoq batch`` re-run) retries what failed: its failures are
-- forgotten, and its total is what finished well plus what is still open.
local run_key, pending_key = KEYS[1], KEYS[2]
redis.call('HSETNX', run_key, 'created_at', ARGV[2])
redis.call('HSET', run_key, 'tenant', ARGV[3], 'priority', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', run_key, 'callback', ARGV[5])
else
  redis.call('HDEL', run_key, 'callback')
end
redis.call('HDEL', run_key, 'sealed', 'ended_at', 'cancelling_at')
local done = tonumber(redis.call('HGET', run_key, 'succeeded') or '0')
  + tonumber(redis.call('HGET', run_key, 'cancelled') or '0')
redis.call('HSET', run_key, 'failed', 0, 'total', done + redis.call('SCARD', pending_key))
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
redis.call('PEXPIRE', run_key, ARGV[6])
return 1
