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
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local defer_ms = tonumber(ARGV[3] or '0') or 0
local expires_ms = tonumber(ARGV[4] or '') or (86400000 + defer_ms)
-- The envelope is arq's job format, serialized as JSON; the job text is embedded verbatim
-- so that nothing in it (numbers, unicode, key order) is re-encoded.
local envelope = '{"t":null,"f":"' .. task .. '","a":[],"k":{"job":' .. ARGV[2] .. '},"et":' ..
  string.format('%d', now_ms) .. '}'
redis.call('SET', KEYS[1], envelope, 'PX', math.floor(expires_ms))
redis.call('ZADD', KEYS[4], now_ms + defer_ms, id)
return 1
