-- run_seal.lua (core/runs.py)
-- KEYS: run, pending, active runs. ARGV: run, now. 1 when sealing ended the run.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'sealed', '1')
return end_if_done(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
