-- run_cancelling.lua (core/runs.py)
-- KEYS: run, pending, active runs. ARGV: run, now. A cancelled run takes no more jobs: it
-- is sealed too. 1 if that ended it (nothing of it was left), else 0.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'ended_at') == 1 then
  return 0
end
redis.call('HSETNX', KEYS[1], 'cancelling_at', ARGV[2])
redis.call('HSET', KEYS[1], 'sealed', '1')
return end_if_done(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
