-- run_end_if_done.lua (core/runs.py): the prelude of the run scripts: end the run if
-- it is sealed and nothing of it is left.
local function end_if_done(run_key, pending_key, run, now)
  if redis.call('HEXISTS', run_key, 'sealed') == 0 then return 0 end
  if redis.call('SCARD', pending_key) > 0 then return 0 end
  if redis.call('HSETNX', run_key, 'ended_at', now) == 0 then return 0 end
  redis.call('ZREM', KEYS[3], run)
  return 1
end
