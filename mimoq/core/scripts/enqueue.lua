-- mimoq atomic enqueue: the cross-language way to submit a job (see README, "Wire format").
--
-- Writes an arq job only if neither its job key nor any result for its id exists, so a
-- caller-supplied id is an idempotency key: enqueueing the same id twice runs it once.
--
-- KEYS[1] arq:job:<id>      KEYS[2] arq:result:<id>
-- KEYS[3] mimoq:result:<id> KEYS[4] mimoq:queue
-- ARGV[1] job id            ARGV[2] job JSON: {"kind": "speech" | "transcription", ...}
-- ARGV[3] defer, ms (optional, default 0)
-- ARGV[4] how long the job may wait before it expires, ms (optional, default 1 day + defer)
--
-- Returns 1 when enqueued, 0 when that id already exists (queued, running or finished).
-- A job that cannot be enqueued is an error reply starting "invalid_request_error:".
--
-- Scheduling (README, "Scheduling"): "priority" is "interactive" (default) or "bulk"; an
-- optional "tenant" names who it is for. A bulk job without a defer waits in
-- mimoq:wait:<model>:tenant:<tenant> (the tenant "_" when it names none) until a worker
-- admits it into the queue, shortly before its model has a slot for it. An interactive
-- job goes straight into the queue while its tenant has fewer than INTERACTIVE_DIRECT (16)
-- of the model's there (not yet granted) and none waiting; past that (a flood) it waits in
-- mimoq:wait:<model>:interactive:tenant:<tenant>, and each grant of the tenant's admits its
-- next one. While the limiter marks the lane over its share
-- (mimoq:wait:<model>:interactive:over-share), it goes straight only when none of its
-- tenant's is there. A tenant held at its limit (mimoq:tenant-held:<tenant>,
-- docs/usage.md) has every new job wait in its list. Either way its arq job key is
-- written now, so the id is taken and its status reads "queued".
--
-- Tenants (docs/cancel.md): every job is added to mimoq:tenant-jobs:<tenant> ("_" when it
-- names none), scored by when its job key expires; the finish path takes it out.
--
-- Runs (README, "Runs"): a job naming a "run" is counted in mimoq:run:<run> (HINCRBY total
-- and model:<model>) and its id added to mimoq:run:<run>:pending, which the one finish path
-- takes it out of; both keys live 7 days past the job's expiry.
-- The numbers and names mimoq.core.wire (INTERACTIVE_DIRECT) and
-- mimoq.core.dialect_constants (the models) also hold. This file runs on its own
-- (redis-cli EVAL), so it spells them once, here; tests/unit/test_enqueue_constants.py checks
-- that the two agree.
local INTERACTIVE_DIRECT = 16
-- mimoq:wait:<model>:interactive:over-share, present while the lane is over its share
local OVER_SHARE = 'over-share'
local MODELS = {
  speech = {['mimo-v2.5-tts'] = true, ['mimo-v2.5-tts-voicedesign'] = true, ['mimo-v2.5-tts-voiceclone'] = true},
  transcription = {['mimo-v2.5-asr'] = true},
}
local DEFAULT_MODEL = {speech = 'mimo-v2.5-tts', transcription = 'mimo-v2.5-asr'}

local id = ARGV[1]
if id == nil or id == '' or string.find(id, '^[%w][%w._-]*$') == nil or #id > 128 then
  return redis.error_reply('invalid_request_error: id must be 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)')
end
if KEYS[1] ~= 'arq:job:' .. id or KEYS[2] ~= 'arq:result:' .. id
    or KEYS[3] ~= 'mimoq:result:' .. id or KEYS[4] ~= 'mimoq:queue' then
  return redis.error_reply('invalid_request_error: KEYS must be arq:job:<id> arq:result:<id> mimoq:result:<id> mimoq:queue')
end
local ok, job = pcall(cjson.decode, ARGV[2])
if not ok or type(job) ~= 'table' then
  return redis.error_reply('invalid_request_error: job must be a JSON object')
end
local tasks = {speech = 'speech', transcription = 'transcription'}
local task = tasks[job['kind']]
if task == nil then
  return redis.error_reply('invalid_request_error: kind must be "speech" or "transcription"')
end
if job['id'] ~= nil and job['id'] ~= id then
  return redis.error_reply('invalid_request_error: the job\'s "id" field differs from ARGV[1]')
end
local priority = job['priority']
if priority == nil then priority = 'interactive' end
if priority ~= 'interactive' and priority ~= 'bulk' then
  return redis.error_reply('invalid_request_error: priority must be "interactive" (the default) or "bulk"')
end
local tenant = job['tenant']
if tenant == cjson.null then tenant = nil end
if tenant ~= nil and (type(tenant) ~= 'string' or #tenant > 64
    or string.find(tenant, '^[%w][%w._-]*$') == nil) then
  return redis.error_reply('invalid_request_error: tenant must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)')
end
local run = job['run']
if run == cjson.null then run = nil end
if run ~= nil and (type(run) ~= 'string' or #run > 128
    or string.find(run, '^[%w][%w._-]*$') == nil) then
  return redis.error_reply('invalid_request_error: run must be 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)')
end
local model = job['model']
if model == nil or model == cjson.null then model = DEFAULT_MODEL[task] end
if priority == 'bulk' and MODELS[task][model] == nil then
  -- the model names a Redis key of the bulk lane: only known models get one
  return redis.error_reply('invalid_request_error: model must be a ' .. task .. ' model of MiMo for a bulk job')
end
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Optional integer arguments, checked strictly: Lua's tonumber takes "nan", "inf", "1e300"
-- and hex, which SET PX / ZADD would then answer with raw Redis errors (or store as garbage).
local YEAR_MS = 31536000000
local function int_arg(value, name, lo, hi, default)
  if value == nil or value == '' then return default end
  if string.find(value, '^-?%d+$') == nil or #value > 16 then
    return nil, 'invalid_request_error: ' .. name .. ' must be a whole number of milliseconds, got "' ..
      string.sub(value, 1, 40) .. '"'
  end
  local n = tonumber(value)
  if n < lo or n > hi then
    return nil, 'invalid_request_error: ' .. name .. ' must be between ' ..
      string.format('%d', lo) .. ' and ' .. string.format('%d', hi) .. ' ms, got ' .. value
  end
  return n
end
local defer_ms, defer_err = int_arg(ARGV[3], 'ARGV[3] (defer)', -YEAR_MS, YEAR_MS, 0)
if defer_ms == nil then return redis.error_reply(defer_err) end
local expires_ms, expires_err = int_arg(ARGV[4], 'ARGV[4] (expiry)', 1, 2 * YEAR_MS,
  86400000 + math.max(defer_ms, 0))
if expires_ms == nil then return redis.error_reply(expires_err) end
if expires_ms <= defer_ms then
  return redis.error_reply('invalid_request_error: ARGV[4] (expiry) must be longer than ' ..
    'ARGV[3] (defer), or the job expires before it may run')
end
-- The envelope is arq's job format, serialized as JSON; the job text is embedded verbatim
-- so that nothing in it (numbers, unicode, key order) is re-encoded.
local envelope = '{"t":null,"f":"' .. task .. '","a":[],"k":{"job":' .. ARGV[2] .. '},"et":' ..
  string.format('%d', now_ms) .. '}'
redis.call('SET', KEYS[1], envelope, 'PX', math.floor(expires_ms))
-- Tenants (docs/cancel.md): every job is indexed by when its job key expires, so a tenant's
-- cancel reaches it in any state (deferred, waiting for a retry); the finish path takes it
-- out. One ZADD: the member '~ttl' (no job id starts with '~') scores the key's own expiry,
-- the hour after the one its last job expires in. GT keeps it from shrinking and CH counts
-- it only when it grows, so the TTL is renewed (PEXPIREAT) at most once an hour, not per job.
-- Then too, jobs whose job key expired unrun (gone without a record, so never taken out)
-- are pruned: an index in constant use does not grow with them.
local job_expires = now_ms + math.floor(expires_ms)
local key_expires = (math.floor(job_expires / 3600000) + 2) * 3600000
local tenant_jobs = 'mimoq:tenant-jobs:' .. (tenant or '_')
if redis.call('ZADD', tenant_jobs, 'GT', 'CH', string.format('%d', job_expires), id,
    string.format('%d', key_expires), '~ttl') > 1 then
  redis.call('PEXPIREAT', tenant_jobs, string.format('%d', key_expires))
  redis.call('ZREMRANGEBYSCORE', tenant_jobs, '-inf', '(' .. string.format('%d', now_ms))
end
if run ~= nil then
  local run_key = 'mimoq:run:' .. run
  local keep_ms = math.floor(expires_ms) + 604800000
  if redis.call('HINCRBY', run_key, 'total', 1) == 1 then
    -- the run's first job (or its first since `mimoq batch` began it again)
    redis.call('HSETNX', run_key, 'created_at', string.format('%.3f', now_ms / 1000))
    redis.call('HSETNX', run_key, 'tenant', tenant or '_')
    redis.call('HSETNX', run_key, 'priority', priority)
    redis.call('ZADD', 'mimoq:runs', 'NX', now_ms / 1000, run)
  end
  if type(model) == 'string' then redis.call('HINCRBY', run_key, 'model:' .. model, 1) end
  redis.call('SADD', run_key .. ':pending', id)
  redis.call('PEXPIRE', run_key, keep_ms)
  redis.call('PEXPIRE', run_key .. ':pending', keep_ms)
end
if defer_ms <= 0 and MODELS[task][model] ~= nil then
  local wait = 'mimoq:wait:' .. model .. ':'
  local who = tenant or '_'
  local admitted = wait .. 'admitted'
  local straight = false
  if priority == 'interactive' then
    -- up to INTERACTIVE_DIRECT of the tenant's in the queue; beyond, its own list (a flood waits its turn)
    wait = wait .. 'interactive:'
    admitted = wait .. 'admitted:' .. who
    local direct = redis.call('ZCARD', admitted)
    straight = direct < INTERACTIVE_DIRECT and redis.call('EXISTS', wait .. 'tenant:' .. who) == 0
    -- the lane lately over its share (the limiter parked a job of it, limiter_acquire.lua):
    -- one a tenant in the queue, as admission keeps it; more would only be picked to be
    -- parked back in the list
    if straight and direct > 0 and redis.call('EXISTS', wait .. OVER_SHARE) == 1 then
      straight = false
    end
  else
    -- nothing of this model is waiting or admitted: this job starts the look-ahead at once
    -- (the workers' admissions keep it filled from then on)
    straight = redis.call('ZCARD', admitted) == 0 and redis.call('EXISTS', wait .. 'tenants') == 0
  end
  -- a tenant held at its limit (MIMOQ_TENANT_LIMITS) keeps its new jobs in its lists
  if straight and redis.call('EXISTS', 'mimoq:tenant-held:' .. who) == 1 then straight = false end
  if straight then
    redis.call('ZADD', admitted, now_ms / 1000, id)
    -- an interactive job keeps a negative defer (ahead of the queue) as it always has
    local score = now_ms
    if priority == 'interactive' then score = now_ms + defer_ms end
    redis.call('ZADD', KEYS[4], score, id)
    return 1
  end
  -- The tenant joins its lane's ring, and the model the set of models with waiting jobs,
  -- with its first waiting job: a model leaves that set only once its rings are empty
  -- (limiter_common.lua, forget_waiting_model), so while this list is not empty the model
  -- is still in it. (An SADD per job was one command in eight of the enqueue.)
  if redis.call('RPUSH', wait .. 'tenant:' .. who, id) == 1 then
    redis.call('RPUSH', wait .. 'tenants', who)
    redis.call('SADD', 'mimoq:wait:models', model)
  end
  return 1
end
redis.call('ZADD', KEYS[4], now_ms + defer_ms, id)
return 1
