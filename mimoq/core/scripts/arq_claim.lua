-- Take one due job for a worker: what arq's start_jobs does with WATCH, EXISTS, ZSCORE,
-- MULTI, PSETEX and EXEC (four round trips; four commands for a job it cannot take), in
-- one call (mimoq.core.arq_compat.start_claimed, the only caller).
-- KEYS[1] arq:in-progress:<id>   KEYS[2] the queue   KEYS[3...] keys read for the taken job's
-- run, so that neither arq's start of it nor its own first read costs a round trip:
-- with ARGV[5], KEYS[3] arq:job:<id> and KEYS[4] arq:retry:<id> first (arq's run_job would
-- read the job and count the try, INCR and EXPIRE, in a MULTI/EXEC of its own: here the try
-- is read with the job and written back one more, with its TTL, by one SET); then any more
-- keys, whose values are read
-- ARGV[1] job id   ARGV[2] now, ms (the worker's clock, as arq compares)
-- ARGV[3] how long the in-progress key lives, ms (arq's in_progress_timeout_s)
-- ARGV[4] this claim's token, the in-progress key's value (arq only asks whether it exists)
-- ARGV[5] (optional) the try count's TTL, seconds: arq's run_job's
-- Returns {the job's queue score (arq passes it to run_job), with ARGV[5] the job and its
-- try, then the value of each more key} when taken; nil when the job runs elsewhere, has
-- left the queue (score 0 is "not queued" to arq) or is not due.
-- The same claim sent again (the client retries a call whose reply a Redis outage lost,
-- after the script ran) finds its own token and takes the job it already holds: a plain
-- "exists" would leave the job held by no one until the key expired. Its try was counted
-- by the first: it is read, not counted again.
local starts = ARGV[5] ~= nil and ARGV[5] ~= ''
-- One MGET reads the job, its try, and the more keys: a GET of the job of its own cost a
-- command a claim (1.2 a job of the issue #22 mix), and the try's INCR and EXPIRE one more
-- than the SET that now writes it (1.27-1.41 claims a job on that mix, bench/limiter_asks.py).
-- A missing key reads false, which Redis answers as nil: the reply keeps its length.
local function taken(score, again)
  local out = {score}
  local reads, more = {}, 3
  if starts then
    reads[1], reads[2] = KEYS[3], KEYS[4]
    more = 5
  end
  for i = more, #KEYS do reads[#reads + 1] = KEYS[i] end
  local values = {}
  if #reads > 0 then values = redis.call('MGET', unpack(reads)) end
  local next_value = 1
  if starts then
    out[2] = values[1]
    if again then
      out[3] = tonumber(values[2]) or 1
    else
      -- (arq counts tries from 1; a try counted outside arq, count_tries, is read here too)
      out[3] = (tonumber(values[2]) or 0) + 1
      redis.call('SET', KEYS[4], out[3], 'EX', ARGV[5])
    end
    next_value = 3
  end
  for i = next_value, #values do out[#out + 1] = values[i] end
  return out
end
-- The in-progress key is set first, with NX and GET (Redis 7: set only if absent, the
-- value it had read in the same command), and taken back for a job that proves not to be
-- due: a job taken, the common case, costs one command less than a GET before the SET
-- (1.2 a job of the issue #22 mix; the rare job found not due costs one more, its DEL).
local held = redis.call('SET', KEYS[1], ARGV[4], 'NX', 'GET', 'PX', ARGV[3])
if held and held ~= ARGV[4] then return nil end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if held then
  if not score then return nil end
  return taken(score, true)
end
if not score or tonumber(score) == 0 or tonumber(score) > tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return nil
end
return taken(score, false)
