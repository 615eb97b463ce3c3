-- The result record of a job a worker ran (succeeded or failed), written unless its cancel
-- came first (result_put.lua; core/results.py write_result_unless_cancelled). Runs after
-- the preludes run_end_if_done.lua and result_put.lua: a job of a run is counted in it in
-- the same call.
-- KEYS[1] mimoq:result:<id>, KEYS[2] its cancel marker mimoq:cancel:<id>; for a job of a
-- run, KEYS[3..5] the run's keys (run, pending, active runs: core/runs.py).
-- ARGV[1] the record (JSON), ARGV[2] its TTL in seconds, ARGV[3] the job's done channel,
-- ARGV[4] its status (the news published there); for a job of a run, ARGV[5] the run,
-- ARGV[6] the job id, ARGV[7] now.
-- Returns {written, counted}: written as result_put's; counted: count_finish's answer (0
-- with no run, or nothing written).
local written = result_put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if written == 0 then return {0, 0} end
local counted = 0
if #KEYS == 5 then
  counted = count_finish(KEYS[3], KEYS[4], KEYS[5], ARGV[5], ARGV[6], ARGV[4], ARGV[7])
end
return {written, counted}
