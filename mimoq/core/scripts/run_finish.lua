-- run_finish.lua (core/runs.py)
-- KEYS: run, pending, active runs. ARGV: run, job id, status, now.
-- 0: not counted (counted before, or the run is gone); 1: counted; 2: counted, and the run
-- ended with it (this caller announces the end).
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
return 1 + end_if_done(KEYS[1], KEYS[2], ARGV[1], ARGV[4])
