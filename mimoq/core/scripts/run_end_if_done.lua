-- run_end_if_done.lua (core/runs.py): the prelude of the run scripts, and of
-- result_unless_cancelled.lua, which counts a finished job in its run in the same call.
-- End the run if it is sealed and nothing of it is left.
local function end_if_done(run_key, pending_key, active_key, run, now)
  if redis.call('HEXISTS', run_key, 'sealed') == 0 then return 0 end
  if redis.call('SCARD', pending_key) > 0 then return 0 end
  if redis.call('HSETNX', run_key, 'ended_at', now) == 0 then return 0 end
  redis.call('ZREM', active_key, run)
  return 1
end
-- Count a finished job in its run, once. 0: not counted (counted before, or the run is
-- gone); 1: counted; 2: counted, and the run ended with it (this caller announces the end).
local function count_finish(run_key, pending_key, active_key, run, job_id, status, now)
  if redis.call('SREM', pending_key, job_id) == 0 then return 0 end
  redis.call('HINCRBY', run_key, status, 1)
  return 1 + end_if_done(run_key, pending_key, active_key, run, now)
end
