-- mimoq atomic cancel: the cross-language way to withdraw jobs (see README, "Cancel").
--
-- KEYS: none (every key is named from the ids: arq:job:<id>, arq:in-progress:<id>,
--   mimoq:result:<id>, mimoq:cancel:<id>, mimoq:fanout:<id>, mimoq:queue, mimoq:wait:*,
--   and a deferred job's limiter keys, which its marker names: see give_back_ticket).
-- ARGV[1] who writes the "cancelled" result records:
--   "queue"  (any language): the job is put at the head of mimoq:queue and the next free
--            worker records it as cancelled (and sends its job.cancelled callback) without
--            calling MiMo;
--   "caller" (mimoq's own Python, with a Redis user that may write results): the caller
--            records it, then takes it out of the queue.
-- ARGV[2..] job ids (at most 10,000 per call).
--
-- Returns a flat array of triples {id, answer, detail}, one per id given, in order, then one
-- per chunk job of a cancelled long job (its "fan-out"):
--   "cancelled"        it was queued, waiting for admission, deferred or waiting for a retry;
--                      detail: its arq job JSON (ARGV[1] "caller": record it now);
--   "stopping"         a worker holds it but has not been granted its MiMo call: that worker
--                      records it (no MiMo call starts); detail ""
--   "in_flight"        its MiMo call was granted: the worker holding it closes the call
--                      within 2 s, discards the partial output and records it; detail ""
--   "already_cancelled" detail ""
--   "already_finished" detail: its status ("succeeded" or "failed"); left as it is
--   "not_found"        detail ""
--   "invalid"          the id is malformed; detail: why
--
-- The per-job marker mimoq:cancel:<id> ("cancelled") is what makes it final: the limiter's
-- grant (the workers' acquire script) reads the same marker atomically, so a job is either
-- granted before this script ran (then it is "in_flight") or never granted at all. Workers
-- subscribe to the channel mimoq:cancel for the ids of jobs they hold.
-- Cost: O(1) per id (plus its chunks); nothing here scans a queue or a list.
local mode = ARGV[1]
if mode ~= 'queue' and mode ~= 'caller' then
  return redis.error_reply('invalid_request_error: ARGV[1] must be "queue" or "caller", then the job ids')
end
if #ARGV - 1 > 10000 then
  return redis.error_reply('invalid_request_error: at most 10000 ids per call; split the list')
end
local DAY_MS = 86400000
local out = {}

local function answer(id, what, detail)
  out[#out + 1] = id
  out[#out + 1] = what
  out[#out + 1] = detail or ''
end

-- The admission places a queued job holds, named as enqueue.lua names them.
local function forget_places(id, job)
  local model, tenant = job['model'], job['tenant']
  if type(tenant) ~= 'string' then tenant = '_' end
  if type(model) ~= 'string' then
    if job['kind'] == 'transcription' then model = 'mimo-v2.5-asr' else model = 'mimo-v2.5-tts' end
  end
  local wait = 'mimoq:wait:' .. model .. ':'
  redis.call('ZREM', wait .. 'admitted', id)
  redis.call('ZREM', wait .. 'interactive:admitted:' .. tenant, id)
end

-- The limiter ticket (a reserved slot) of a job deferred for quota goes back at once: the
-- acquire script named its limiter in the marker ("ticket <key base>"). The ticket and its
-- tenant's count go (as acquire does for a cancelled job), and the schedule's last ticket
-- takes the freed slot, its job brought forward in the queue by as much, so the slot does
-- not pass unused; the schedule then ends where that ticket was. O(1). Mode "caller" only:
-- a least-privilege producer may not write limiter keys (its ticket is dropped when the
-- slot comes due or a worker finds the job cancelled).
local function give_back_ticket(id, base)
  local state = base .. ':state'
  -- a ticket is in one lane, and the schedule is both (limiter_common.lua all_tickets)
  local bulk, inter = base .. ':bulk_tickets', base .. ':interactive_tickets'
  local lane = bulk
  local at = tonumber(redis.call('ZSCORE', bulk, id))
  if not at then
    lane = inter
    at = tonumber(redis.call('ZSCORE', inter, id))
  end
  if not at then return end
  -- a caller whose Redis user may not write limiter keys leaves it (nothing written yet)
  local removed = redis.pcall('ZREM', lane, id)
  if type(removed) == 'table' then return end
  local whose, counts = base .. ':ticket_tenant', base .. ':tenant_tickets'
  local field = redis.call('HGET', whose, id)
  if field then
    redis.call('HDEL', whose, id)
    if redis.call('HINCRBY', counts, field, -1) <= 0 then
      redis.call('HDEL', counts, field, 'last:' .. field)
    end
  end
  redis.call('HDEL', base .. ':ticket_audio', id)
  local tat = tonumber(redis.call('HGET', state, 'tat'))
  -- the schedule's last ticket: the later of the lanes' last ones (the greater id on a tie)
  local last, last_lane = redis.call('ZRANGE', bulk, -1, -1, 'WITHSCORES'), bulk
  local last_inter = redis.call('ZRANGE', inter, -1, -1, 'WITHSCORES')
  if #last_inter > 0 and (#last == 0 or tonumber(last_inter[2]) > tonumber(last[2])
      or (tonumber(last_inter[2]) == tonumber(last[2]) and last_inter[1] > last[1])) then
    last, last_lane = last_inter, inter
  end
  local ends = at
  if #last > 0 and tonumber(last[2]) > at then
    local moved, was = last[1], tonumber(last[2])
    redis.call('ZADD', last_lane, string.format('%.17g', at), moved)
    local due = tonumber(redis.call('ZSCORE', 'mimoq:queue', moved))
    if due then
      local sooner = math.max(1, math.floor(due - (was - at) * 1000))
      redis.call('ZADD', 'mimoq:queue', 'XX', sooner, moved)
    end
    ends = was
  end
  if tat and tat > ends then redis.call('HSET', state, 'tat', string.format('%.17g', ends)) end
end

local cancel_one

-- A long job's chunk jobs are cancelled with it (their answers follow the ids given).
local function cascade(id)
  local raw = redis.call('GET', 'mimoq:fanout:' .. id)
  if not raw then return end
  local ok, plan = pcall(cjson.decode, raw)
  if not ok or type(plan) ~= 'table' or type(plan['children']) ~= 'table' then return end
  for _, child in ipairs(plan['children']) do
    if type(child) == 'table' and type(child['job_id']) == 'string' then
      cancel_one(child['job_id'])
    end
  end
end

cancel_one = function(id)
  if string.find(id, '^[%w][%w._-]*$') == nil or #id > 128 then
    return answer(string.sub(id, 1, 140), 'invalid',
      'id must be 1-128 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)')
  end
  local marker = 'mimoq:cancel:' .. id
  local result = redis.call('GET', 'mimoq:result:' .. id)
  if result then
    local status = string.match(result, '"status":"(%a+)"') or 'failed'
    if status == 'cancelled' then return answer(id, 'already_cancelled') end
    return answer(id, 'already_finished', status)
  end
  local envelope = redis.call('GET', 'arq:job:' .. id)
  local before = redis.call('GET', marker)
  if not envelope then
    -- cancelled earlier and already recorded by the caller, or never enqueued
    if before == 'cancelled' then return answer(id, 'already_cancelled') end
    return answer(id, 'not_found')
  end
  local keep = math.max(redis.call('PTTL', 'arq:job:' .. id), DAY_MS) + DAY_MS
  redis.call('SET', marker, 'cancelled', 'PX', keep)
  if redis.call('EXISTS', 'arq:in-progress:' .. id) == 1 then
    redis.call('PUBLISH', 'mimoq:cancel', id)
    if before == 'cancelled' then answer(id, 'already_cancelled')
    elseif before == 'granted' then answer(id, 'in_flight')
    else answer(id, 'stopping') end
    return cascade(id)
  end
  local ok, parsed = pcall(cjson.decode, envelope)
  local job = {}
  if ok and type(parsed) == 'table' and type(parsed['k']) == 'table'
      and type(parsed['k']['job']) == 'table' then
    job = parsed['k']['job']
  end
  forget_places(id, job)
  if mode == 'caller' and type(before) == 'string' and string.sub(before, 1, 7) == 'ticket ' then
    give_back_ticket(id, string.sub(before, 8))
  end
  if mode == 'queue' then
    -- score 1: ahead of every due job (0 means "not queued" to arq)
    redis.call('ZADD', 'mimoq:queue', 1, id)
  end
  -- ("caller": the caller takes it out of the queue once it is recorded; a worker that
  -- takes it first finds the marker and records it the same way, without a call)
  if before == 'cancelled' and mode == 'queue' then
    answer(id, 'already_cancelled')
  else
    answer(id, 'cancelled', envelope)
  end
  return cascade(id)
end

for i = 2, #ARGV do cancel_one(ARGV[i]) end
return out
