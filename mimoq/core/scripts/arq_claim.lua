-- Take one due job for a worker: what arq's start_jobs does with WATCH, EXISTS, ZSCORE,
-- MULTI, PSETEX and EXEC (four round trips; four commands for a job it cannot take), in
-- one call (mimoq.core.arq_compat.start_claimed, the only caller).
-- KEYS[1] arq:in-progress:<id>   KEYS[2] the queue   KEYS[3...] keys the taken job's run
-- reads first (optional: read here, the run saves a round trip)
-- ARGV[1] job id   ARGV[2] now, ms (the worker's clock, as arq compares)
-- ARGV[3] how long the in-progress key lives, ms (arq's in_progress_timeout_s)
-- ARGV[4] this claim's token, the in-progress key's value (arq only asks whether it exists)
-- Returns {the job's queue score (arq passes it to run_job), then the value of each of
-- KEYS[3...]} when taken; nil when the job runs elsewhere, has left the queue (score 0 is
-- "not queued" to arq) or is not due.
-- The same claim sent again (the client retries a call whose reply a Redis outage lost,
-- after the script ran) finds its own token and takes the job it already holds: a plain
-- "exists" would leave the job held by no one until the key expired.
local function taken(score)
  if #KEYS < 3 then return {score} end
  -- (a missing key reads false, which Redis answers as nil: the reply keeps its length)
  local values = redis.call('MGET', unpack(KEYS, 3))
  table.insert(values, 1, score)
  return values
end
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[4] then return nil end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if held then
  if not score then return nil end
  return taken(score)
end
if not score or tonumber(score) == 0 or tonumber(score) > tonumber(ARGV[2]) then return nil end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[3])
return taken(score)
