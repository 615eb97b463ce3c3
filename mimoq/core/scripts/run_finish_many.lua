-- run_finish_many.lua (core/runs.py)
-- KEYS: run, pending, active runs. ARGV: run, status, now, job ids... As run_finish.lua for
-- many jobs at once: how many were counted, and 1 if the run ended with them.
local counted = 0
for i = 4, #ARGV do counted = counted + redis.call('SREM', KEYS[2], ARGV[i]) end
if counted == 0 then return {0, 0} end
redis.call('HINCRBY', KEYS[1], ARGV[2], counted)
return {counted, end_if_done(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3])}
