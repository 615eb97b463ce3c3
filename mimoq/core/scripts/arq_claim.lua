-- Take one due job for a worker: what arq's start_jobs does with WATCH, EXISTS, ZSCORE,
-- MULTI, PSETEX and EXEC (four round trips; four commands for a job it cannot take), in
-- one call (mimoq.core.arq_compat.start_claimed, the only caller).
-- KEYS[1] arq:in-progress:<id>   KEYS[2] the queue
-- ARGV[1] job id   ARGV[2] now, ms (the worker's clock, as arq compares)
-- ARGV[3] how long the in-progress key lives, ms (arq's in_progress_timeout_s)
-- Returns the job's queue score when taken (arq passes it to run_job); nil when the job
-- runs elsewhere, has left the queue (score 0 is "not queued" to arq) or is not due.
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) == 0 or tonumber(score) > tonumber(ARGV[2]) then return nil end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
return score
