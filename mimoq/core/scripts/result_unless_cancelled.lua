-- The result record of a job a worker ran (succeeded or failed), written unless its cancel
-- came first (docs/cancel.md, core/results.py write_result_unless_cancelled). Runs after
-- the prelude run_end_if_done.lua: a job of a run is counted in it in the same call.
-- KEYS[1] mimoq:result:<id>, KEYS[2] its cancel marker mimoq:cancel:<id>; for a job of a
-- run, KEYS[3..5] the run's keys (run, pending, active runs: core/runs.py).
-- ARGV[1] the record (JSON), ARGV[2] its TTL in seconds, ARGV[3] the job's done channel,
-- ARGV[4] its status (the news published there); for a job of a run, ARGV[5] the run,
-- ARGV[6] the job id, ARGV[7] now.
-- Returns {written, counted}. written 0: the marker says cancelled, nothing written (the
-- caller records "cancelled"); 1: written and published; 2: written, the publish refused
-- (an ACL without the channel). counted: count_finish's answer (0 with no run).
-- cancel.lua answers "already_finished" when it finds the record and sets the marker
-- otherwise; both are scripts, so a cancel that answered "in_flight" or "stopping" always
-- ends as "cancelled", and a job recorded first is always answered "already_finished".
if redis.call('GET', KEYS[2]) == 'cancelled' then return {0, 0} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local written = 1
local sent = redis.pcall('PUBLISH', ARGV[3], ARGV[4])
if type(sent) == 'table' and sent.err then written = 2 end
local counted = 0
if #KEYS == 5 then
  counted = count_finish(KEYS[3], KEYS[4], KEYS[5], ARGV[5], ARGV[6], ARGV[4], ARGV[7])
end
return {written, counted}
