-- Shared prelude of every limiter script (worker/limiter/core.py prepends it to each one).
--
-- KEYS (worker.limiter.config.KEY_PARTS): 1 state hash, 2 grant log (zset lease -> time),
-- 3 tokens charged per logged lease (hash), 4 in-flight leases (zset lease -> expiry),
-- 5 audio seconds of each ticket (hash job -> seconds; token-limited models only),
-- 6 grants per lane and tenant (hash), 7 interactive grants (zset lease -> time), 8 and 9
-- the bulk and the interactive tickets (zsets job -> reserved slot time; a ticket is only
-- ever in the lane it was given in, and the schedule is both of them: all_tickets),
-- 10 each ticket's "lane:tenant" (hash job -> text), 11 tickets held per "lane:tenant", and
-- "last:lane:tenant" -> the slot time of its latest ticket (hash); then the admission keys
-- (worker.limiter.config.admission_keys): 12 admitted bulk jobs (zset job -> admission
-- time), 13 the ring of tenants with waiting bulk jobs (list), 14 the models with waiting
-- jobs (set), 15 the arq queue, 16 the ring of tenants with waiting interactive jobs (their
-- lists and admitted sets are named from Q.wait_prefix and the tenant).
-- ARGV[1]: the configuration as one JSON object (see worker/limiter/core.py _config);
-- script-specific ARGV follow.
-- Times are seconds from Redis TIME (one clock for the whole fleet), or the configuration's
-- "now" when a test injects its clock.

-- Each decision starts with bind(KEYS, ARGV), which sets the locals below from its keys
-- and configuration. The limiter runs these files as one Redis function library
-- (mimoq.core.scripts.LuaLibrary): the functions below are defined once per server, not per
-- call, so these locals outlive a call. Every call binds them all anew: none of them
-- carries anything from one call to the next but the decoded configurations, which are
-- kept by the text they came from.
local STATE, LOG, TOKENS, LEASES, TICKET_AUDIO, LANES, ILOG, BTICKETS, ITICKETS
local TICKET_TENANT, TENANT_TICKETS
local ADMITTED, RING, WAIT_MODELS, QUEUE, IRING
local NLIMITER = 11
-- all the keys of the call; touch() keeps the first NLIMITER alive
local CALL_KEYS
-- the configuration, and the text it was decoded from
local Q, Q_TEXT
-- Each configuration text decoded so far, with what bind() derives from it (at most
-- MAX_CONFIGS, then forgotten all at once). The workers of a fleet send one text per model,
-- and a server sees their calls interleaved: keeping only the last text decoded one again on
-- about every other call of the mix, 4 us each (issue #22). A test's injected clock makes
-- every text new; the bound keeps that from growing.
local CONFIGS, N_CONFIGS, MAX_CONFIGS = {}, 0, 16
-- the housekeeping horizon of the grant log: the widest window the hard guard can use
local GUARD_MAX
-- a reserved slot further ahead than this is a place in the queue more than a time: its
-- holder comes back half-way there and reads the slot again (a re-plan may have moved it)
local HORIZON
-- housekeep() and touch() do their work at most once per these many seconds (see them)
local HOUSEKEEP_EVERY, TOUCH_EVERY

-- The grants of the last window, all and interactive, once read in this call (nil: not
-- yet): the lanes' shares compare them for every job an admission plans, and they change
-- in a call only by its own grant (note_grant). bind() forgets them.
local RECENT_ALL, RECENT_INTERACTIVE

-- The state fields this call writes (field -> value, the last one written), sent as one
-- HSET when the call ends (end_call), and the state hash as load_state read it (field ->
-- text; nil: not read in this call). A decision wrote its state with up to five HSETs (its
-- grant's, its admission's schedule end, housekeeping's, touch's, a re-plan's) and bumped
-- each of its counters with an HINCRBY of the lanes hash, each replicated on its own (the
-- issue #22 mix: 70.8 -> 68.1 commands a job at 100 calls a window, bench/redis_cost.py).
-- Nothing in a call reads the state hash after load_state, so the writes wait for the end.
local STATE_WRITES, STATE_READ
-- whether this call gives the limiter's keys their TTL as it ends (touch)
local TOUCHING

local function bind(keys, argv)
  RECENT_ALL, RECENT_INTERACTIVE = nil, nil
  STATE_WRITES, STATE_READ, TOUCHING = {}, nil, false
  STATE, LOG, TOKENS, LEASES, TICKET_AUDIO, LANES, ILOG, BTICKETS, ITICKETS =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9]
  TICKET_TENANT, TENANT_TICKETS = keys[10], keys[11]
  ADMITTED, RING, WAIT_MODELS, QUEUE, IRING = keys[12], keys[13], keys[14], keys[15], keys[16]
  CALL_KEYS = keys
  local text = argv[1]
  if text == Q_TEXT then return end
  local c = CONFIGS[text]
  if c == nil then
    if N_CONFIGS >= MAX_CONFIGS then CONFIGS, N_CONFIGS = {}, 0 end
    local q = cjson.decode(text)
    c = {q = q, guard_max = q.window + q.margin_cap, horizon = q.window,
      housekeep_every = q.window / 10, touch_every = math.min(60, q.key_ttl / 8)}
    CONFIGS[text], N_CONFIGS = c, N_CONFIGS + 1
  end
  Q, Q_TEXT = c.q, text
  GUARD_MAX, HORIZON = c.guard_max, c.horizon
  HOUSEKEEP_EVERY, TOUCH_EVERY = c.housekeep_every, c.touch_every
end

-- tenants whose waiting interactive jobs one admission round looks at
local RING_ROUND = 64
-- the AIMD factor never drops below this share of the target
local MIN_FACTOR = 0.05
-- the queue is re-planned once the rate factor or the token calibration it was planned
-- for is off by more than this share
local REPLAN_DRIFT = 0.05
-- the guard's margin never drops below this however small the measured lag
local MIN_MARGIN = 0.01
-- margin = lag EWMA + this many mean deviations (about a p99 for a skewed lag)
local LAG_SPREAD = 4

-- unpack() has a small stack limit: pass long argument lists in chunks
local CHUNK = 500

-- The numbers a hash holds for each id (0 when it holds none).
local function numbers_of(hash, ids)
  local out = {}
  for i = 1, #ids, CHUNK do
    local part = redis.call('HMGET', hash, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #part do out[i + j - 1] = tonumber(part[j]) or 0 end
  end
  return out
end

-- HSET `key` the field/value pairs of the flat list `flat` (chunked, as unpack() needs).
local function hset_pairs(key, flat)
  for i = 1, #flat, 2 * CHUNK do
    redis.call('HSET', key, unpack(flat, i, math.min(i + 2 * CHUNK - 1, #flat)))
  end
end

-- ZADD `key` with each id's time in `at` (chunked: unpack() has a small stack limit);
-- `score` turns a time into the score written (default: the time itself), and `only`
-- ('XX', optional) is ZADD's flag. Returns what the ZADDs answered in all (without a flag:
-- the members new to `key`).
local function zadd_many(key, ids, at, score, only)
  local answered = 0
  for i = 1, #ids, CHUNK do
    local args = {only}
    for j = i, math.min(i + CHUNK - 1, #ids) do
      local t = at[ids[j]]
      if score then t = score(t) end
      args[#args + 1] = t
      args[#args + 1] = ids[j]
    end
    answered = answered + redis.call('ZADD', key, unpack(args))
  end
  return answered
end

-- Tokens charged to each lease id (0 when none was recorded).
local function tokens_of(ids)
  return numbers_of(TOKENS, ids)
end

local function now_s()
  if Q.now ~= nil then return Q.now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Lua numbers returned to Redis are truncated to integers: send floats as text. A command's
-- arguments need no fmt(): redis.call writes a number with %.17g itself, in C, exact for
-- any float. The limiter's decisions and bulk moves pass numbers: a fmt() cost about
-- 0.9 us of Lua, and 1.4 us went on each ticket a re-plan moved (issue #22).
local function fmt(x)
  return string.format('%.17g', x)
end

-- Write state fields (name, value, name, value, ...): sent when the call ends (end_call).
local function state_write(...)
  local args = {...}
  for i = 1, #args, 2 do
    local field = args[i]
    if STATE_WRITES[field] == nil then STATE_WRITES[#STATE_WRITES + 1] = field end
    STATE_WRITES[field] = args[i + 1]
  end
end

-- Add n to counter `name`, kept in the state hash as "c:<name>", which load_state reads
-- whole: a bump is a field of the call's one HSET, not a command of its own (read here when
-- this call has not read the state). The counters are a fixed few (turns, admitted, parked,
-- yielded, respaced:<reason>; worker/limiter/core.py _lanes); the grants per lane and
-- tenant, as many as the tenants, stay in the lanes hash, one HINCRBY a grant, so the state
-- read on every decision does not grow with the tenants.
local function count_up(name, n)
  local field = 'c:' .. name
  local count = STATE_WRITES[field]
  if count == nil and STATE_READ ~= nil then count = tonumber(STATE_READ[field]) or 0 end
  if count == nil then count = tonumber(redis.call('HGET', STATE, field)) or 0 end
  state_write(field, count + n)
end

-- The call's end: its state writes in one HSET, the keys' TTLs when touch() asked for them,
-- then its answer. (A call that raises an error never gets here: what it wrote before stays,
-- as Redis keeps a failed script's writes, but not its state's.)
local function end_call(answer)
  local n = #STATE_WRITES
  if n > 0 then
    local flat = {}
    for i = 1, n do
      local field = STATE_WRITES[i]
      flat[2 * i - 1], flat[2 * i] = field, STATE_WRITES[field]
    end
    redis.call('HSET', STATE, unpack(flat))
  end
  if TOUCHING then
    for i = 1, NLIMITER do redis.call('EXPIRE', CALL_KEYS[i], Q.key_ttl) end
  end
  return answer
end

-- The model's state, its counters too (count_up). Read whole (HGETALL): a small hash is a
-- listpack, where an HMGET looks each field up from its start and one pass reads them all
-- (bench/grant_replay.py: the HGETALL 3.3 us a grant, counters included; a grant's HMGETs,
-- this read of 24 fields and two of the tenants' hashes, were 6.4-8.0 us before).
local function load_state()
  local raw = {}
  local flat = redis.call('HGETALL', STATE)
  for i = 1, #flat, 2 do raw[flat[i]] = flat[i + 1] end
  STATE_READ = raw
  return {
    tat = tonumber(raw.tat) or 0,
    f = tonumber(raw.f) or 1,
    f_at = tonumber(raw.f_at) or 0,
    cd = tonumber(raw.cd) or 0,
    tok_rate = tonumber(raw.tok_rate) or Q.tokens_per_s,
    lat = tonumber(raw.lat),
    lat_dev = tonumber(raw.lat_dev) or 0,
    n429 = tonumber(raw.n429) or 0,
    -- the rate factor and token calibration the queued tickets were spaced for
    plan_f = tonumber(raw.plan_f),
    plan_rate = tonumber(raw.plan_rate),
    -- the pace over actual grants: no grant before ptat - 3/4 of a slot
    ptat = tonumber(raw.ptat) or 0,
    -- the fleet's measured grant-to-send lag (EWMA, mean deviation)
    lag = tonumber(raw.lag),
    lag_dev = tonumber(raw.lag_dev) or 0,
    -- the recovery per window of the current 429 episode, and when the last one began
    rec = tonumber(raw.rec) or Q.recovery,
    last429 = tonumber(raw.last429),
    -- when touch() last gave every limiter key its TTL
    touched = tonumber(raw.touched),
    -- when housekeep() last dropped what no decision needs
    hk = tonumber(raw.hk),
    -- the audio seconds of this model's calls (EWMA of the granted calls' measured audio;
    -- token-limited models only): what an admitted job's slot is sized on (slot_plan)
    audio = tonumber(raw.audio),
    -- seconds of credit the schedule's end could not take yet (settle_shift)
    owed = tonumber(raw.owed) or 0,
    -- a call's tokens besides its audio's, as measured (token_fit; nil: Q.call_tokens)
    tok_base = tonumber(raw.tok_base),
    -- the weighted moments token_fit keeps, as text (read by a release only)
    rg = raw.rg or nil,
    -- a large call's tokens on this model (token_fit: the mean call's + 2 deviations)
    lump = tonumber(raw.lump),
    -- how late ticket holders ask for their slots (EWMA, mean deviation; limiter_acquire.lua)
    late = tonumber(raw.late),
    late_dev = tonumber(raw.late_dev) or 0,
  }
end

-- The AIMD factor now: the stored value plus the additive recovery since it was set.
local function factor(st, now)
  local f = st.f
  if now > st.f_at then
    f = f + st.rec * (now - st.f_at) / Q.window
  end
  if f > 1 then f = 1 end
  return f
end

-- The hard guard's margin: the measured lag's EWMA + LAG_SPREAD deviations, capped so the
-- guard never paces below the target; the configured margin until a lag is measured.
local function margin(st)
  if st.lag == nil then return Q.margin end
  return math.min(Q.margin_cap, math.max(MIN_MARGIN, st.lag + LAG_SPREAD * st.lag_dev))
end

-- Seconds between slots of one request at the current factor.
local function spacing(f)
  return Q.window / (Q.requests * Q.target * f)
end

-- The tokens a call with `audio` seconds is estimated at (0 without a token limit): the
-- model's measured tokens besides the audio's (st.tok_base, else the configured ones) and
-- its measured tokens per audio second.
local function call_cost(st, audio)
  if Q.tokens <= 0 then return 0 end
  return math.ceil((st.tok_base or Q.call_tokens) + st.tok_rate * audio)
end

-- A token-limited model whose typical call (state field `audio`) takes at least this many
-- request slots of token time is token-bound: see slot_length.
local TOKEN_BOUND = 1.1
-- A token-bound model's shortest slot, in request slots.
local TOKEN_BOUND_FLOOR = 0.25

-- A call's share of the schedule: whichever of its request and token costs is longer. On a
-- token-bound model, a call shorter than a request's slot takes only its token time (down to
-- a quarter of a request's slot): the quota limits both sums over a window, not each call,
-- and the calls longer than a request's slot leave the request quota more room than the
-- shorter ones take, as long as the typical call is longer. Taking the longer cost of each
-- call left 6-7 % of the token quota unused on transcriptions of varied lengths (issue #22:
-- 2.4 s clips among 45 s ones each took a whole request's slot for a third of its tokens).
-- A run of short calls brings the typical audio down within a few grants (its EWMA), and
-- the hard guard counts the requests of the window whatever the schedule says.
local function slot_length(f, cost, st)
  local per_request = spacing(f)
  if Q.tokens <= 0 then return per_request end
  -- The share of the token quota the slots are sized on: the target, or, once calls of
  -- varied lengths are fitted, the quota less a large call (st.lump; never below half the
  -- target). A window of such calls spaced on the typical one holds up to a large call
  -- more than the schedule's average: at the target, the hard guard held calls back often
  -- and only its lag margin stood between such a grant and a 429 (issue #22).
  local budget = Q.target
  if st.lump ~= nil then
    budget = math.max(math.min(Q.target, 1 - st.lump / Q.tokens), Q.target / 2)
  end
  local per_token = Q.window / (Q.tokens * budget * f)
  local floor = per_request
  if st.audio ~= nil and call_cost(st, st.audio) * per_token >= TOKEN_BOUND * per_request then
    floor = TOKEN_BOUND_FLOOR * per_request
  end
  return math.max(floor, cost * per_token)
end

-- How long a job told to come back for a slot `wait` seconds ahead is deferred.
local function come_back_in(wait)
  if wait > HORIZON then return wait / 2 end
  return wait
end

-- The field a lane's tenant is counted under in TENANT_TICKETS ('_': no tenant).
local function tenant_field(bulk, tenant)
  local lane = 'interactive'
  if bulk then lane = 'bulk' end
  return lane .. ':' .. (tenant or '_')
end

-- The lane index a ticket is in: the bulk or the interactive tickets.
local function lane_tickets(bulk)
  if bulk then return BTICKETS end
  return ITICKETS
end

-- How many tickets a tenant's turn looks at past its own latest one (turn_candidates).
local TURN_SCAN = 16

-- The tickets of the lane (`bulk`) a tenant's turn may take, as a flat ZRANGEBYSCORE reply
-- (id, slot, ...): from the second after `last` (the tenant's latest ticket; false: none), so
-- one ticket of someone else stays between two of its own, up to TURN_SCAN of them, and
-- before `before` (the slot it would queue at). Looking at the second one only, a turn was
-- lost whenever that ticket was a tenant's holding few: behind another tenant's 16
-- interactive tickets and one of a third tenant's, a tenant sending 3 jobs waited for
-- 17 of the flood's (the scheduling e2e test: a failed CI run, 3 runs in 20 here).
-- In the bulk lane, never a ticket within Q.hold of `now`: its job entered arq's queue
-- Q.hold before its slot (queue_score) and its worker is most likely waiting for it
-- already. Moved to the schedule's end, that holder asked at its old slot, was told its new
-- one, and went round arq's queue again: a pick and two asks for a turn that a ticket past
-- the hold gives for a queue place's move (149-170 holders a run of the 3,000-job mix at
-- 100 calls a window, bench/limiter_asks.py; issue #22). Past it, the second ticket is
-- still the first looked at, as after `last`. (The interactive lane's turns keep the near
-- slots: a tenant there is admitted one job at a time over the lane's
-- share, each job's turn would wait out the hold again, and a tenant of 10 jobs behind a
-- flood finished 5 slots later in bench/scheduling.py; the ticket they take is dropped,
-- not moved, and its job asks again only then: drop_turned.)
local function turn_candidates(bulk, last, before, now)
  local from = last
  if bulk then
    local near = now + (Q.hold or 0)
    if not last or last < near then from = near end
  end
  local after = '-inf'
  if from then after = '(' .. fmt(from) end
  return redis.call('ZRANGEBYSCORE', lane_tickets(bulk), after, '(' .. fmt(before),
    'WITHSCORES', 'LIMIT', 1, TURN_SCAN)
end

-- The tenant field of each ticket of `candidates` (turn_candidates' reply), by position:
-- those `known` holds (id -> field; may be empty) without a read, the others with one
-- HMGET (false: the ticket has none).
local function candidate_fields(candidates, known)
  local fields, unknown, ids = {}, {}, {}
  for i = 1, #candidates / 2 do
    local field = known[candidates[2 * i - 1]]
    if field then
      fields[i] = field
    else
      unknown[#unknown + 1] = i
      ids[#ids + 1] = candidates[2 * i - 1]
    end
  end
  if #ids > 0 then
    local read = redis.call('HMGET', TICKET_TENANT, unpack(ids))
    for k = 1, #unknown do fields[unknown[k]] = read[k] end
  end
  return fields
end

-- The position in `candidates` of the first ticket a tenant counted under `mine`, holding
-- `held` tickets, takes as its turn: the first whose tenant holds at least two more
-- (`counts`: field -> count, as TENANT_TICKETS holds them). Two tenants holding as many
-- tickets as each other never swap. nil: no turn.
local function turn_position(fields, mine, held, counts)
  for i = 1, #fields do
    local theirs = fields[i]
    if theirs and theirs ~= mine and (tonumber(counts[theirs]) or 0) >= held + 2 then
      return i
    end
  end
  return nil
end

-- The schedule: every ticket of both lanes in slot order (by time, then job id, as one
-- sorted set orders them; a job is in one lane only), as three lists: the jobs, their slot
-- times and whether each is a bulk ticket. The lanes are the only index of the tickets: a
-- third one of them all cost a ZADD per ticket given or moved and a ZREM per ticket
-- dropped, 2.7 commands a job (issue #22). Each lane is read in order and the two merged
-- here: a ZUNION of them built a third sorted set on every call and lost each ticket's
-- lane, which a ZMSCORE of every ticket then read back (over 200 tickets, their commands
-- took twice the server time of the two ZRANGEs: bench/replan_cost.py).
local function all_tickets()
  local b = redis.call('ZRANGE', BTICKETS, 0, -1, 'WITHSCORES')
  local i = redis.call('ZRANGE', ITICKETS, 0, -1, 'WITHSCORES')
  local ids, times, bulk = {}, {}, {}
  local x, y, n = 1, 1, 0
  local bt, it = tonumber(b[2]), tonumber(i[2])
  while bt or it do
    n = n + 1
    if it == nil or (bt ~= nil and (bt < it or (bt == it and b[x] < i[y]))) then
      ids[n], times[n], bulk[n] = b[x], bt, true
      x = x + 2
      bt = tonumber(b[x + 1])
    else
      ids[n], times[n], bulk[n] = i[y], it, false
      y = y + 2
      it = tonumber(i[y + 1])
    end
  end
  return ids, times, bulk
end

-- The most credit the schedule's end carries, in request slots (settle_shift).
local OWED_CAP_SLOTS = 8

-- The schedule's end moved from `base` by `shift` seconds, a call's settled length less the
-- length it was scheduled for, but never in front of `floor` (the slot after the last queued
-- ticket). A credit that floor stops is carried (`st.owed`, a state field the caller writes)
-- and taken off the next shifts: dropped, a short call's credit was lost whenever the
-- queue's last ticket sat near the end, while every long call's debit was taken in full,
-- and transcriptions of varied lengths left 6-7 % of the token quota unused (issue #22).
-- An idle schedule (its end past, or `base` past it) owes nothing.
local function settle_shift(st, base, shift, floor, per_request, now)
  local owed = st.owed
  if base > st.tat or st.tat < now then owed = 0 end
  local want = base + shift - owed
  local at = math.max(want, floor)
  st.owed = math.min(at - want, OWED_CAP_SLOTS * per_request)
  return at
end

-- The schedule's last ticket, {job, slot time} (empty: no ticket), as one sorted set's
-- ZRANGE -1 -1 WITHSCORES gives it (of two at the same time, the greater member).
local function last_ticket()
  local b = redis.call('ZRANGE', BTICKETS, -1, -1, 'WITHSCORES')
  local i = redis.call('ZRANGE', ITICKETS, -1, -1, 'WITHSCORES')
  if #b == 0 then return i end
  if #i == 0 then return b end
  local bt, it = tonumber(b[2]), tonumber(i[2])
  if it > bt or (it == bt and i[1] > b[1]) then return i end
  return b
end

-- The slot time of `job`'s ticket (nil: it holds none), and whether it is a bulk one.
local function ticket_of(job)
  local at = tonumber(redis.call('ZSCORE', BTICKETS, job))
  if at then return at, true end
  at = tonumber(redis.call('ZSCORE', ITICKETS, job))
  if at then return at, false end
  return nil, nil
end

-- Record that the tenant counted under `field` holds a ticket at `at` (its latest, if so).
-- `last`: the time of its latest ticket when the caller has read it already (false: it
-- has none); nil reads it.
local function note_last(field, at, last)
  if last == nil then
    last = tonumber(redis.call('HGET', TENANT_TICKETS, 'last:' .. field)) or false
  end
  if last == false or at > last then
    redis.call('HSET', TENANT_TICKETS, 'last:' .. field, at)
  end
end

-- The arq queue score (ms) of a job whose slot is at `at`: Q.hold before it, where its
-- worker waits the rest in-process (worker/limiter/core.py acquire). A ticket's holder is
-- kept at this score while it waits in the queue, whoever moves its ticket (retime,
-- retime_all; admission, plan_slots; its own deferral, limiter_acquire.lua requeue), so it
-- is taken when its slot is near, not taken early only to be deferred again (about 30
-- commands a round: issue #22); and so that its worker, which reads the slot back from this
-- score (limiter.core.QUEUED_TICKET), asks first at the slot: never clamped to now, a slot
-- less than Q.hold away gives a score already past. XX: a job not in the queue (or never
-- there) stays out.
local function queue_score(at)
  return math.ceil((at - (Q.hold or 0)) * 1000)
end

-- Put `job`'s ticket at `at`, in its lane (`bulk`); a new ticket is counted
-- for its lane's tenant (`tenant`, and `last` as note_last takes it, matter only then).
-- `held`: the tickets that tenant holds, when the caller has read it along with `last`:
-- the count and the latest ticket are then written with one HSET.
local function set_ticket(job, at, bulk, tenant, last, held)
  if redis.call('ZADD', lane_tickets(bulk), at, job) == 1 then
    local field = tenant_field(bulk, tenant)
    redis.call('HSET', TICKET_TENANT, job, field)
    if held ~= nil and last ~= nil then
      if last == false or at > last then
        redis.call('HSET', TENANT_TICKETS, field, held + 1, 'last:' .. field, at)
      else
        redis.call('HSET', TENANT_TICKETS, field, held + 1)
      end
    else
      redis.call('HINCRBY', TENANT_TICKETS, field, 1)
      note_last(field, at, last)
    end
  end
end

-- New tickets of one admission, given in one batch: `counts` holds the lane's
-- TENANT_TICKETS fields as the caller read them (a tenant's count and "last:" its latest
-- ticket), kept current here as tickets are added; write_tickets writes them all. Giving
-- each ticket on its own (set_ticket) cost a ZADD, an HSET of its tenant and an HSET of the
-- tenant's count per admitted job, 2.5 commands a job of the issue's mix (issue #22).
-- `field_of`: each added job's tenant field (a turn's read looks there before TICKET_TENANT,
-- which gets them only at the end); `at`: each added job's slot time; `placed`: how many of
-- `ids` are in the lane already.
local function ticket_batch(bulk, counts)
  return {bulk = bulk, counts = counts, ids = {}, at = {}, fields = {}, dirty = {},
    field_of = {}, placed = 0, owned = {}}
end

-- TENANT_TICKETS as a table (field -> text): every tenant's count and latest ticket, as an
-- admission batch reads them once (its turns compare a tenant with all the others).
local function tenant_counts()
  local counts = {}
  local flat = redis.call('HGETALL', TENANT_TICKETS)
  for i = 1, #flat, 2 do counts[flat[i]] = flat[i + 1] end
  return counts
end

-- Add `job`'s ticket at `at`, counted under tenant field `field`, to `batch`.
local function add_ticket(batch, job, at, field)
  local n = #batch.ids + 1
  batch.ids[n], batch.fields[n], batch.at[job] = job, field, at
  batch.field_of[job] = field
  local counts = batch.counts
  counts[field] = (tonumber(counts[field]) or 0) + 1
  local last = tonumber(counts['last:' .. field])
  if last == nil or at > last then counts['last:' .. field] = at end
  if not batch.dirty[field] then
    batch.dirty[field] = true
    batch.dirty[#batch.dirty + 1] = field
  end
end

-- Put the tickets of `batch` not in the lane yet into it: one ZADD, whose count of new
-- members says whether any of them held a ticket already. None should (each job just got
-- its first marker, mark_ticket_of); one that did is moved, as set_ticket moves it, and not
-- counted again: it is the one whose tenant TICKET_TENANT knows already (read only then).
-- A turn's read of the lane (turn_at_admission) places them first; the tenants' writes
-- wait for write_tickets.
local function place_tickets(batch)
  local ids, from, n = batch.ids, batch.placed + 1, #batch.ids
  if from > n then return end
  local unplaced = {}
  for i = from, n do unplaced[#unplaced + 1] = ids[i] end
  local added = zadd_many(lane_tickets(batch.bulk), unplaced, batch.at)
  local known = {}
  if added < n - from + 1 then
    for i = from, n, CHUNK do
      local part = redis.call('HMGET', TICKET_TENANT, unpack(ids, i, math.min(i + CHUNK - 1, n)))
      for j = 1, #part do known[i + j - 1] = part[j] ~= false end
    end
  end
  for i = from, n do
    local field = batch.fields[i]
    if known[i] then
      batch.counts[field] = batch.counts[field] - 1
    else
      batch.owned[#batch.owned + 1] = ids[i]
      batch.owned[#batch.owned + 1] = field
    end
  end
  batch.placed = n
end

-- Write the tickets of `batch`: the ones not placed yet into the lane (place_tickets), then
-- one HSET of their tenants and one HSET of the counts and latest tickets of the tenants
-- they were added for.
local function write_tickets(batch)
  place_tickets(batch)
  local counts = batch.counts
  hset_pairs(TICKET_TENANT, batch.owned)
  local out = {}
  for i = 1, #batch.dirty do
    local field = batch.dirty[i]
    out[#out + 1] = field
    out[#out + 1] = counts[field]
    if counts['last:' .. field] ~= nil then
      out[#out + 1] = 'last:' .. field
      out[#out + 1] = counts['last:' .. field]
    end
  end
  hset_pairs(TENANT_TICKETS, out)
end

-- Move a held ticket to `at`, in its lane. A caller that knows the ticket's lane (`bulk`),
-- its "lane:tenant" (`field`, false: none) or that tenant's latest ticket (`last`, as
-- note_last takes it) passes them; nil reads them. (A ticket is only ever in the lane it
-- was given in, and its field is the one set_ticket wrote.)
local function retime(job, at, bulk, field, last)
  if bulk == nil then bulk = redis.call('ZSCORE', BTICKETS, job) ~= false end
  set_ticket(job, at, bulk)
  redis.call('ZADD', QUEUE, 'XX', queue_score(at), job)
  if field == nil then field = redis.call('HGET', TICKET_TENANT, job) end
  if field then note_last(field, at, last) end
end

-- Stop counting `job`'s ticket for its tenant (the last ticket clears the tenant's fields).
-- `field`: the "lane:tenant" it was counted under, when the caller knows it (it is the one
-- set_ticket wrote: the job's own lane and tenant); nil reads it. Returns the tickets the
-- tenant still holds in that lane (nil: the job held none).
local function forget_tenant(job, field)
  if field == nil then
    field = redis.call('HGET', TICKET_TENANT, job)
    if not field then return nil end
    redis.call('HDEL', TICKET_TENANT, job)
  elseif redis.call('HDEL', TICKET_TENANT, job) == 0 then
    return nil
  end
  local left = redis.call('HINCRBY', TENANT_TICKETS, field, -1)
  if left <= 0 then
    redis.call('HDEL', TENANT_TICKETS, field, 'last:' .. field)
  end
  return left
end

-- Drop `job`'s ticket. `bulk` and `field` as retime takes them: a known lane removes it
-- from that lane only. A ticket's audio seconds are only written for models with
-- a token limit, so only those delete them (the stale-ticket sweep in housekeep deletes
-- them whatever the limit, for a limit removed while tickets were held).
local function drop_ticket(job, bulk, field)
  local left = forget_tenant(job, field)
  if bulk ~= false then redis.call('ZREM', BTICKETS, job) end
  if not bulk then redis.call('ZREM', ITICKETS, job) end
  if Q.tokens > 0 then redis.call('HDEL', TICKET_AUDIO, job) end
  return left
end

-- Park interactive `job` of `tenant` (nil: none): out of arq's queue, back at the head of
-- its tenant's waiting list, from where admission brings it back when its tenant's ticket
-- is granted (admit_interactive), and the lane marked over its share for enqueue.lua
-- (Q.over_share_key: while it is there, a tenant's new job goes straight to the queue only
-- when none of the tenant's is there; before, up to 16 a tenant did, to be parked here).
-- False, writing nothing, when the job is not in arq's queue (a caller outside arq).
local function park_job(job, tenant)
  if redis.call('ZREM', QUEUE, job) == 0 then return false end
  local who = tenant or '_'
  redis.call('ZREM', Q.wait_prefix .. 'interactive:admitted:' .. who, job)
  if redis.call('LPUSH', Q.wait_prefix .. 'interactive:tenant:' .. who, job) == 1 then
    redis.call('RPUSH', IRING, who)
    redis.call('SADD', WAIT_MODELS, Q.model)
  end
  count_up('parked', 1)
  redis.call('SET', Q.over_share_key, 1, 'PX', Q.over_share_ms)
  return true
end

-- Drop the interactive ticket of `job` (counted under `field`, at `slot`) that another
-- tenant's turn takes while the lane is over its share: the lane's slots stay as many.
-- While its tenant holds another ticket, the job is parked too, as its next ask would
-- park it: left in arq's queue at its old place, it was picked only for that (79-109 such
-- drops in a 1,500-job mix at 100 calls a window, bench/limiter_asks.py; issue #22). A slot
-- within the hold is left to its ask: its job may be waiting for it in a worker already.
local function drop_turned(job, field, slot, now)
  local left = drop_ticket(job, false, field)
  if left and left > 0 and slot - (Q.hold or 0) > now then
    park_job(job, string.sub(field, #'interactive:' + 1))
  end
end

-- Move every id of `ids` to its time in `at`, in bulk: what retime() does one ticket at a
-- time (its lane, its place in arq's queue, its tenant's latest ticket), in a constant
-- number of commands per CHUNK tickets instead of about six per ticket. `is_bulk[k]`:
-- whether ids[k] is a bulk ticket (all_tickets gives it).
local function retime_all(ids, at, is_bulk)
  if #ids == 0 then return end
  -- their jobs' places in arq's queue follow (queue_score); XX: only those queued
  zadd_many(QUEUE, ids, at, queue_score, 'XX')
  local bulk, inter = {}, {}
  for k = 1, #ids do
    if is_bulk[k] then bulk[#bulk + 1] = ids[k] else inter[#inter + 1] = ids[k] end
  end
  zadd_many(BTICKETS, bulk, at)
  zadd_many(ITICKETS, inter, at)
  -- each tenant's latest ticket moves to its latest new time (if that is later)
  local latest, fields = {}, {}
  for i = 1, #ids, CHUNK do
    local part = redis.call('HMGET', TICKET_TENANT, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #part do
      local field = part[j]
      if field then
        local t = at[ids[i + j - 1]]
        if latest[field] == nil then fields[#fields + 1] = field end
        if latest[field] == nil or t > latest[field] then latest[field] = t end
      end
    end
  end
  if #fields == 0 then return end
  local names = {}
  for i = 1, #fields do names[i] = 'last:' .. fields[i] end
  local lasts = numbers_of(TENANT_TICKETS, names)
  local out = {}
  for i = 1, #fields do
    local t = latest[fields[i]]
    if lasts[i] == 0 or t > lasts[i] then
      out[#out + 1] = names[i]
      out[#out + 1] = t
    end
  end
  hset_pairs(TENANT_TICKETS, out)
end

-- Re-space the queued tickets for the rate factor `f` and the current token calibration,
-- keeping their order and the head's time: a queue planned at a 429's lower rate, or
-- with an uncalibrated token estimate, would otherwise stay too sparse until it drained.
-- The queue holds the admitted look-ahead only, so this is bounded work, and it is done
-- in bulk: a constant number of commands however many tickets move.
--
-- When every slot got shorter (the rate recovering, the token estimate falling), a ticket
-- only ever moves earlier: each keeps the earlier of its time and its re-planned one, which
-- keeps every two tickets at least a new slot apart. A plan anchored at now behind an
-- overdue head (its holder back late) put every ticket later by as much, and each holder
-- already waiting in its worker for its slot (up to Q.hold ahead) then asked at its old
-- time, was told to wait, and asked again: 0.15 asks a job on the issue's mix (issue #22).
local function replan(st, f, now)
  local ids, times, bulk = all_tickets()
  local n = #ids
  if n > 0 then
    -- audio seconds size a slot only under a token limit (call_cost)
    local audio = {}
    if Q.tokens > 0 then audio = numbers_of(TICKET_AUDIO, ids) end
    local shorter = st.plan_f ~= nil and f >= st.plan_f
      and (Q.tokens <= 0 or (st.plan_rate ~= nil and st.tok_rate <= st.plan_rate))
    local t = math.max(times[1], now)
    local at, moved, moved_bulk, tail = {}, {}, {}, t
    for i = 1, n do
      local len = slot_length(f, call_cost(st, audio[i] or 0), st)
      local old = times[i]
      if shorter and old <= t then
        tail = old + len
      else
        at[ids[i]] = t
        moved[#moved + 1] = ids[i]
        moved_bulk[#moved] = bulk[i]
        tail = t + len
      end
      t = t + len
    end
    retime_all(moved, at, moved_bulk)
    st.tat = tail
  end
  st.plan_f, st.plan_rate = f, st.tok_rate
  state_write('tat', st.tat, 'plan_f', f, 'plan_rate', st.tok_rate)
end

local function drifted(value, planned)
  return planned == nil or math.abs(value - planned) > REPLAN_DRIFT * planned
end

-- Re-plan the queue when the rate it was planned for is no longer the rate.
local function replan_if_drifted(st, f, now)
  if drifted(f, st.plan_f) or (Q.tokens > 0 and drifted(st.tok_rate, st.plan_rate)) then
    replan(st, f, now)
  end
end

-- Housekeeping runs at most once per HOUSEKEEP_EVERY seconds (a tenth of a window), not on
-- every decision: what it drops is only ever read through time bounds (the guard counts
-- from now - guard, a lease or a ticket that just expired is a tenth of a window late to
-- go: 6 s at MiMo's 60 s window, against a ticket's grace of 300 s and an admission's two
-- windows) and it cost 6 commands per decision, 4 % of a job's commands. Capped at 1 s it
-- still ran on most decisions at MiMo's pace, where one model's decisions come 0.6 s apart
-- or more (about 9 commands each: issue #22).

-- Drop what no decision needs any more: grants older than the widest guard window,
-- expired leases (their worker died), tickets nobody claimed in time.
local function housekeep(st, now)
  if st.hk ~= nil and now - st.hk < HOUSEKEEP_EVERY and now >= st.hk then return end
  st.hk = now
  state_write('hk', now)
  local old = redis.call('ZRANGEBYSCORE', LOG, '-inf', now - GUARD_MAX)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', LOG, '-inf', now - GUARD_MAX)
    for i = 1, #old, CHUNK do
      redis.call('HDEL', TOKENS, unpack(old, i, math.min(i + CHUNK - 1, #old)))
    end
  end
  redis.call('ZREMRANGEBYSCORE', ILOG, '-inf', now - GUARD_MAX)
  redis.call('ZREMRANGEBYSCORE', LEASES, '-inf', now)
  -- an admitted bulk job never granted (its worker died first) stops counting (a grant's
  -- top-up reads the count; a tenth of a window late is soon enough for what died)
  redis.call('ZREMRANGEBYSCORE', ADMITTED, '-inf', now - Q.admit_ttl)
  for _, lane in ipairs({BTICKETS, ITICKETS}) do
    local stale = redis.call('ZRANGEBYSCORE', lane, '-inf', now - Q.ticket_grace)
    if #stale > 0 then
      for i = 1, #stale do forget_tenant(stale[i]) end
      redis.call('ZREMRANGEBYSCORE', lane, '-inf', now - Q.ticket_grace)
      for i = 1, #stale, CHUNK do
        redis.call('HDEL', TICKET_AUDIO, unpack(stale, i, math.min(i + CHUNK - 1, #stale)))
      end
    end
  end
end

-- Keep the limiter's keys for about key_ttl after their last use. Refreshing every key's
-- TTL on every decision cost 12 EXPIREs (writes, replicated and logged) per call, a fifth of
-- a job's Redis commands; once every TOUCH_EVERY seconds (an eighth of the TTL, at most
-- 60 s) is enough for a TTL of days. A key created in between (a zset emptied and filled
-- again) gets its TTL at the next refresh; a model nobody calls again keeps such a key until
-- it is used again (a bounded remainder: at most NLIMITER small keys per account and model,
-- never per job).
-- The EXPIREs are sent when the call ends (end_call), after its writes: a key this call
-- creates, the state hash by its one HSET among them, gets its TTL too.
local function touch(st, now)
  if st.touched ~= nil and now - st.touched < TOUCH_EVERY and now >= st.touched then return end
  state_write('touched', now)
  TOUCHING = true
end

-- The jobs of `ids` whose arq record is still there, with their `owners` (optional, kept
-- aligned): a job whose record expired while it waited is dropped, as arq would drop it.
-- One EXISTS for the batch, which counts the records it finds; each job is looked at on its
-- own only when one is missing. An EXISTS per job cost one command per admitted job
-- (issue #22).
local function still_queued(ids, owners)
  if #ids == 0 then return ids, owners end
  local found = 0
  for i = 1, #ids, CHUNK do
    local keys = {}
    for j = i, math.min(i + CHUNK - 1, #ids) do keys[#keys + 1] = 'arq:job:' .. ids[j] end
    found = found + redis.call('EXISTS', unpack(keys))
  end
  if found == #ids then return ids, owners end
  local kept, kept_owners = {}, {}
  for i = 1, #ids do
    if redis.call('EXISTS', 'arq:job:' .. ids[i]) == 1 then
      kept[#kept + 1] = ids[i]
      if owners then kept_owners[#kept] = owners[i] end
    end
  end
  return kept, kept_owners
end

-- Put back the "cancelled" marker of `job` that a decision's SET ... GET replaced, for as
-- long as cancel.lua keeps one (a day past the job's record, two at least).
local function restore_cancelled(job)
  local day = 86400000
  local keep = math.max(redis.call('PTTL', 'arq:job:' .. job), day) + day
  redis.call('SET', Q.cancel_prefix .. job, 'cancelled', 'PX', keep)
end

-- Mark `job` as holding a ticket at `at` in its cancel marker ("ticket <this limiter's key
-- base>"), so a cancel finds the ticket and gives its slot back at once (cancel.lua).
-- `fresh`: only if the job has no marker yet (a cancel that came first keeps its
-- "cancelled"); else the marker is replaced, and a "cancelled" it replaced is put back
-- (restore_cancelled). Returns whether the marker was set.
local function mark_ticket_of(job, at, now, fresh)
  local ms = math.floor((math.max(at - now, 0) + Q.ticket_grace + Q.lease_ttl) * 1000)
  local base = 'ticket ' .. string.sub(STATE, 1, #STATE - #':state')
  if fresh then
    return redis.call('SET', Q.cancel_prefix .. job, base, 'PX', ms, 'NX') ~= false
  end
  if redis.call('SET', Q.cancel_prefix .. job, base, 'PX', ms, 'GET') == 'cancelled' then
    restore_cancelled(job)
    return false
  end
  return true
end

-- The slot plan of a bulk admission: admitted jobs get their tickets as they are admitted,
-- at the schedule's end in admission order (which is already the tenants' round robin),
-- and enter arq's queue Q.hold before their slot. A job's first pick is then its grant,
-- after at most Q.hold waited in the worker: before, its first pick only learned its slot
-- and deferred it through arq's queue again, about 30 commands a bulk job (issue #22).
-- A model with a token limit sizes each slot on its calls' typical audio (st.audio, the
-- granted calls' measured seconds) and writes it as the ticket's audio: the job's own is
-- known only when it asks, and its grant settles the difference (limiter_acquire.lua,
-- settle_planned). Before, those jobs got no slot here and their first pick only learned
-- it: a bulk transcription asked 2.5 times and was picked twice (issue #22). nil (the job
-- is due at once and asks for its slot when picked) where a slot's length is not known yet
-- (a token-limited model before its first measured grant) or the account is not known
-- (Q.admit_slots off: a pool of several accounts routes each call to one of them). A batch
-- whose slots all end within Q.hold is not planned either (plans_batch): nobody waits for a
-- slot, so each job's first ask is its grant (or a wait within the hold) anyway, and a
-- ticket would only cost its writes (a quota far from binding paid 2 commands and 9 % more
-- Redis CPU a job).
local function slot_plan(st, f, now)
  if not Q.admit_slots then return nil end
  if Q.tokens <= 0 then return {st = st, len = spacing(f), now = now} end
  if st.audio == nil then return nil end
  return {st = st, len = slot_length(f, call_cost(st, st.audio), st), now = now,
    audio = st.audio}
end

-- The audio seconds a plan's tickets were sized on, as each ticket's audio (a re-plan and a
-- moved slot read it): one HSET for the batch.
local function note_planned_audio(plan, ids)
  if plan.audio == nil then return end
  local flat = {}
  for i = 1, #ids do
    flat[2 * i - 1], flat[2 * i] = ids[i], plan.audio
  end
  hset_pairs(TICKET_AUDIO, flat)
end

-- Whether `plan` gives a batch of `n` jobs their slots: when the batch's last slot lies
-- beyond Q.hold. Only the schedule's end was looked at, and a batch admitted while it was
-- near (the look-ahead's worth, after an idle moment or a 429's cool-down) entered the
-- queue at once: its jobs' first asks, a pick after another, then found the schedule grown
-- by the others' and took tickets at its end, most of them beyond the hold, and went round
-- arq's queue again (647 of the 3,000-job mix's bulk jobs, issue #22).
local function plans_batch(plan, n)
  local st = plan.st
  return math.max(st.tat, plan.now, st.cd) + (n - 1) * plan.len - plan.now > (Q.hold or 0)
end

-- The tenants' turn of an admitted job of tenant field `mine` in lane `bulk`, as acquire
-- gives it to a job that takes a ticket (limiter_acquire.lua): when `mine` holds at least
-- two tickets fewer than the owner of a ticket past its own latest one (in the bulk lane,
-- past the hold of `now` too: turn_candidates; turn_position), it takes that slot, and the
-- displaced ticket moves to `tail` (the schedule's end), its job's queue place with it
-- (`moved_to` notes it), or, when `drop()` says so (the interactive lane over its share, as
-- acquire does; asked only when a turn is taken: it may read), loses its ticket. `counts`:
-- TENANT_TICKETS as read once for the batch, kept current here. Returns the slot taken
-- (nil: no turn, the job queues at `tail`) and whether the displaced ticket was dropped.
local function turn_at_admission(bulk, mine, counts, tail, moved_to, tickets, drop, now)
  local held = tonumber(counts[mine]) or 0
  local lane = 'interactive:'
  if bulk then lane = 'bulk:' end
  local most = 0
  for name, n in pairs(counts) do
    if string.sub(name, 1, #lane) == lane and name ~= mine then
      most = math.max(most, tonumber(n) or 0)
    end
  end
  if most < held + 2 then return nil end  -- nobody to take a turn from: no read
  -- the lane is read below: the batch's tickets are in it first (their tenants are known)
  place_tickets(tickets)
  local candidates = turn_candidates(bulk, tonumber(counts['last:' .. mine]) or false, tail, now)
  if #candidates == 0 then return nil end
  local fields = candidate_fields(candidates, tickets.field_of)
  local k = turn_position(fields, mine, held, counts)
  if k == nil then return nil end
  local moved, theirs = candidates[2 * k - 1], fields[k]
  local dropped = drop ~= nil and drop()
  if dropped then
    -- (only ever an interactive ticket: `drop` is given for that lane alone)
    drop_turned(moved, theirs, tonumber(candidates[2 * k]), now)
    counts[theirs] = (tonumber(counts[theirs]) or 1) - 1
  else
    local their_last = tonumber(counts['last:' .. theirs]) or false
    retime(moved, tail, bulk, theirs, their_last)
    if their_last == false or tail > their_last then counts['last:' .. theirs] = tail end
    moved_to[moved] = tail
  end
  count_up('turns', 1)
  return tonumber(candidates[2 * k]), dropped
end

-- Give each job of `batch` (owned by `owners`, the tenants it waits under) its ticket at
-- the schedule's end (or, on its tenant's turn, a slot of a tenant holding more), as
-- `plan` says; returns the arq queue score (ms) of each. A job whose marker says cancelled
-- gets no ticket and is due at once (its worker records it).
local function plan_slots(batch, owners, plan)
  local due, st, now = {}, plan.st, plan.now
  local moved_to, index, planned_ids = {}, {}, {}
  local tickets = ticket_batch(true, tenant_counts())
  for i = 1, #batch do
    local id = batch[i]
    local tail = math.max(st.tat, now, st.cd)
    due[i] = math.floor(now * 1000)
    index[id] = i
    if mark_ticket_of(id, tail, now, true) then
      local mine = tenant_field(true, owners[i])
      local at = turn_at_admission(true, mine, tickets.counts, tail, moved_to, tickets, nil,
        now) or tail
      add_ticket(tickets, id, at, mine)
      planned_ids[#planned_ids + 1] = id
      st.tat = tail + plan.len
      -- Q.hold before its slot even when that is already past (it is due at once): its
      -- worker reads the slot from this place and waits for it before it asks
      due[i] = queue_score(at)
    end
  end
  write_tickets(tickets)
  -- a job of this batch displaced by a later one's turn: its queue place follows its ticket
  for id, at in pairs(moved_to) do
    if index[id] then due[index[id]] = queue_score(at) end
  end
  state_write('tat', st.tat)
  note_planned_audio(plan, planned_ids)
  return due
end

-- Move the jobs of `batch` into the arq queue at `now` (or at the scores `planned` gives
-- them: see slot_plan), recorded in `admitted` unless that is nil: one ZADD per key and one
-- count for the whole batch (a round admitting k jobs cost 3k commands for these when each
-- job was moved on its own).
local function admit_batch(batch, admitted, now, planned)
  if #batch == 0 then return end
  local due, at = {}, {}
  for i = 1, #batch do
    due[2 * i - 1], due[2 * i] = (planned and planned[i]) or math.floor(now * 1000), batch[i]
    at[2 * i - 1], at[2 * i] = now, batch[i]
  end
  for i = 1, #due, 2 * CHUNK do
    local j = math.min(i + 2 * CHUNK - 1, #due)
    redis.call('ZADD', QUEUE, unpack(due, i, j))
    if admitted then redis.call('ZADD', admitted, unpack(at, i, j)) end
  end
  count_up('admitted', #batch)
end

-- Whether `tenant` is held at its limit (MIMOQ_TENANT_LIMITS, worker/tenant_gate.py): its
-- jobs keep waiting and its turns go to the others. Only checked when limits are set.
local function held(tenant)
  return Q.held_prefix ~= nil and redis.call('EXISTS', Q.held_prefix .. tenant) == 1
end

-- The round robin of admit_from, one tenant a turn: RPOPLPUSH turns the ring (its tail to
-- its head), the tenant's next job is popped, and a tenant whose list is empty leaves the
-- ring. 3 commands a job. Returns the jobs and their tenants, aligned.
local function take_in_turns(ring, lists, room)
  local turns = 0
  local batch, owners = {}, {}
  while #batch < room and turns < room + 16 do
    turns = turns + 1
    local tenant = redis.call('RPOPLPUSH', ring, ring)
    if not tenant then break end
    if not held(tenant) then
      local list = lists .. tenant
      local id = redis.call('LPOP', list)
      if redis.call('LLEN', list) == 0 then redis.call('LREM', ring, 0, tenant) end
      if id then
        batch[#batch + 1] = id
        owners[#batch] = tenant
      end
    end
  end
  return batch, owners
end

-- The largest ring take_in_pass reads whole.
local PASS_RING = 64

-- The same turns as take_in_turns, the same jobs in the same order and the ring left as
-- it would leave it, played out in Lua on the ring and its tenants' list lengths as read
-- once: one LRANGE, an LLEN a tenant (and its EXISTS under tenant limits), one LPOP with a
-- count a tenant that gives jobs, and the ring written back (DEL, RPUSH). A batch of 12
-- from 3 tenants costs 10 commands instead of 36 (issue #22: the bulk look-ahead's top-ups,
-- a quarter of it at a time, were 3 commands a bulk job of the mix).
local function take_in_pass(ring, lists, room)
  local order = redis.call('LRANGE', ring, 0, -1)
  local left, skip = {}, {}
  for i = 1, #order do
    local tenant = order[i]
    if left[tenant] == nil then
      skip[tenant] = held(tenant)
      left[tenant] = 0
      if not skip[tenant] then left[tenant] = redis.call('LLEN', lists .. tenant) end
    end
  end
  local turns, seq, taken = 0, {}, {}
  while #seq < room and turns < room + 16 and #order > 0 do
    turns = turns + 1
    local tenant = table.remove(order)
    table.insert(order, 1, tenant)
    if not skip[tenant] then
      if left[tenant] > 0 then
        left[tenant] = left[tenant] - 1
        taken[tenant] = (taken[tenant] or 0) + 1
        seq[#seq + 1] = tenant
      end
      if left[tenant] == 0 then
        local kept = {}
        for i = 1, #order do
          if order[i] ~= tenant then kept[#kept + 1] = order[i] end
        end
        order = kept
      end
    end
  end
  local popped = {}
  for tenant, n in pairs(taken) do
    popped[tenant] = {ids = redis.call('LPOP', lists .. tenant, n), next = 1}
  end
  local batch, owners = {}, {}
  for i = 1, #seq do
    local from = popped[seq[i]]
    local id = from.ids and from.ids[from.next]
    from.next = from.next + 1
    if id then
      batch[#batch + 1] = id
      owners[#batch] = seq[i]
    end
  end
  redis.call('DEL', ring)
  if #order > 0 then redis.call('RPUSH', ring, unpack(order)) end
  return batch, owners
end

-- Move up to `room` waiting jobs from the lists of one lane's ring into the arq queue,
-- one job per tenant in turn (round robin over the ring of tenants with waiting jobs:
-- deficit round robin with equal quanta and unit cost). Each admitted job costs O(1); the
-- loop is bounded by `room`. A batch whose pass costs fewer commands than its turns (4 and
-- 2 a tenant, 3 with tenant limits, against 3 a job: a few jobs more than the ring has
-- tenants) is taken in one pass (take_in_pass), any other a turn at a time
-- (take_in_turns); the ring's length is read for it when the batch is over 3 jobs. A job
-- whose arq record expired is dropped after the loop (still_queued), so a round that meets
-- one admits one fewer: the next top-up fills it. Returns the jobs admitted.
local function admit_from(ring, admitted, lists, room, track, now, plan)
  if not track then admitted = nil end
  local batch, owners
  local tenants = 0
  -- (a batch of 3 or fewer costs no more a turn at a time than the pass would)
  if room > 3 then tenants = redis.call('LLEN', ring) end
  local per_tenant = 2
  if Q.held_prefix ~= nil then per_tenant = 3 end
  if tenants > 0 and tenants <= PASS_RING and 4 + per_tenant * tenants < 3 * room then
    batch, owners = take_in_pass(ring, lists, room)
  else
    batch, owners = take_in_turns(ring, lists, room)
  end
  batch, owners = still_queued(batch, owners)
  local n = #batch
  local planned = nil
  if plan ~= nil and admitted ~= nil and #batch > 0 and plans_batch(plan, #batch) then
    planned = plan_slots(batch, owners, plan)
  end
  admit_batch(batch, admitted, now, planned)
  return n
end

local function forget_waiting_model()
  if redis.call('EXISTS', RING) == 0 and redis.call('EXISTS', IRING) == 0 then
    redis.call('SREM', WAIT_MODELS, Q.model)
  end
end

-- The grants (all, or `interactive` only) in the window before `now` (one call's `now`).
local function recent_grants(now, interactive)
  if interactive then
    if RECENT_INTERACTIVE == nil then
      RECENT_INTERACTIVE = redis.call('ZCOUNT', ILOG, '(' .. fmt(now - Q.window), '+inf')
    end
    return RECENT_INTERACTIVE
  end
  if RECENT_ALL == nil then
    RECENT_ALL = redis.call('ZCOUNT', LOG, '(' .. fmt(now - Q.window), '+inf')
  end
  return RECENT_ALL
end

-- This call granted one (in `bulk`'s lane): the counts read so far count it too.
local function note_grant(bulk)
  if RECENT_ALL ~= nil then RECENT_ALL = RECENT_ALL + 1 end
  if not bulk and RECENT_INTERACTIVE ~= nil then RECENT_INTERACTIVE = RECENT_INTERACTIVE + 1 end
end

-- The interactive lane's grants in the last window and the slots it holds: what the bulk
-- lane's minimum share m limits (interactive_limit). `held_inter`: the interactive tickets
-- held, when the caller keeps that count (nil: read).
local function interactive_ahead(now, held_inter)
  return recent_grants(now, true) + (held_inter or redis.call('ZCARD', ITICKETS))
end

-- What the bulk lane's minimum share m (0 < m < 1) leaves the interactive lane of the last
-- window's grants and its held slots: interactive <= bulk x (1 - m) / m + 1.
local function interactive_limit(now)
  local m = Q.bulk_min_share
  local inter = recent_grants(now, true)
  return (recent_grants(now, false) - inter) * (1 - m) / m + 1
end

-- Whether an interactive job may take a bulk job's slot: while the interactive lane stays
-- within its limit (interactive_limit). Each count is read only when the answer still
-- depends on it: with no interactive grant or ticket ahead it always may.
local function interactive_may_jump(now, held_inter)
  local m = Q.bulk_min_share
  if m <= 0 then return true end
  if m >= 1 then return false end
  local ahead = interactive_ahead(now, held_inter)
  if ahead == 0 then return true end
  return ahead < interactive_limit(now)
end

-- How many more interactive jobs may take a bulk job's slot before the lane is over its
-- share (interactive_may_jump's rule, each such job holding a ticket). With none left
-- while bulk jobs hold slots, the lane is over its share: each tenant queues one
-- interactive ticket at a time, and its other jobs are parked (limiter_acquire.lua).
local function interactive_room(now, held_inter)
  local m = Q.bulk_min_share
  if m <= 0 then return math.huge end
  if m >= 1 then return 0 end
  return math.max(math.ceil(interactive_limit(now) - interactive_ahead(now, held_inter)), 0)
end

-- An interactive job of tenant field `mine` (holding `held` tickets) takes bulk slot `slot`
-- (a jump ahead of the bulk lane): the slot goes to the interactive ticket of another tenant
-- waiting first after it (of the next TURN_SCAN), when that tenant holds no more tickets
-- than `mine` will, and the job takes that ticket's slot. Such a ticket waits at the
-- schedule's end, where it queued while the lane was over its share; before, the jobs that
-- asked after it jumped ahead of it whenever the share allowed, and one tenant's jobs
-- (admitted as its grants made room, plan_interactive) kept the slots from another's
-- waiting ticket: a tenant sending 3 jobs behind a flood waited for the flood's (the
-- scheduling e2e test, under CPU load). Only a slot more than Q.hold away is given: that
-- ticket's job is picked at its new slot (Q.hold before it), as for any ticket. `counts`:
-- TENANT_TICKETS as the caller read it (nil: that tenant's count is read). Returns the slot
-- the job takes.
local function yield_jump(slot, mine, held, now, counts)
  if slot - (Q.hold or 0) <= now then return slot end
  local waiting = redis.call('ZRANGEBYSCORE', ITICKETS, '(' .. fmt(slot), '+inf', 'WITHSCORES',
    'LIMIT', 0, TURN_SCAN)
  if #waiting == 0 then return slot end
  local fields = candidate_fields(waiting, {})
  local k, theirs = nil, nil
  for i = 1, #fields do
    if fields[i] and fields[i] ~= mine then
      k, theirs = i, fields[i]
      break
    end
  end
  if k == nil then return slot end
  local their_count
  if counts then
    their_count = counts[theirs]
  else
    their_count = redis.call('HGET', TENANT_TICKETS, theirs)
  end
  if (tonumber(their_count) or 0) > held + 1 then return slot end
  local waiter, at = waiting[2 * k - 1], tonumber(waiting[2 * k])
  -- (moved earlier: its tenant's latest ticket stays as it is, or is later)
  retime(waiter, slot, false, theirs, at)
  count_up('yielded', 1)
  return at
end

-- The tickets of interactive jobs admitted from `tenant`'s waiting list, as each one's first
-- ask would give it (limiter_acquire.lua): the earliest bulk ticket's slot at least Q.hold
-- away while the lane may take one (that bulk job moves to the schedule's end), else the
-- schedule's end. Each job enters arq's queue Q.hold before its slot (queue_score; already
-- past for a slot within the hold), so its first pick is its grant. Returns the arq queue
-- score (ms) of each. Before, such a job was picked only to learn its slot, or to be parked
-- back in its list (the lane was over its share by then), and went round arq's queue
-- again: 734 of the 3,000-job mix's 766 interactive speech jobs came this way and asked
-- about 3 times each (issue #22). A slot within the hold is planned only while the lane
-- is over its share: unplanned then, most such jobs were parked at their first ask all the
-- same. A cancelled job gets no ticket and is due at once. A job queued at the schedule's
-- end takes its tenant's turn (turn_at_admission), as its ask would: a flood's parked jobs,
-- all admitted at its first grant once the lane was back under its share, took every slot
-- ahead of a tenant whose one parked job came back at its own grant a moment later (the
-- scheduling e2e test, under CPU load: 18 of the flood's before it).
local function plan_interactive(batch, tenant, plan)
  local due, st, now = {}, plan.st, plan.now
  local planned = {}
  -- Within the batch the lanes' sizes change only by its own tickets (a bulk ticket whose
  -- slot is taken moves, it stays): each is read once, and the batch's tickets are written
  -- together (ticket_batch). Read per job, they cost about 3 commands a job more.
  local field = tenant_field(false, tenant)
  local tickets, bulk_held, held_inter = nil, nil, nil
  local function may_jump()
    if held_inter == nil then
      -- (the batch's tickets a turn placed in the lane are counted there)
      held_inter = redis.call('ZCARD', ITICKETS)
      if tickets then held_inter = held_inter + #tickets.ids - tickets.placed end
    end
    return interactive_may_jump(now, held_inter)
  end
  local function bulk_holds()
    if bulk_held == nil then bulk_held = redis.call('ZCARD', BTICKETS) > 0 end
    return bulk_held
  end
  for i = 1, #batch do
    local id = batch[i]
    due[i] = math.floor(now * 1000)
    local tail = math.max(st.tat, now, st.cd)
    local at, head, wanted, over = tail, nil, true, nil
    if tail - now <= (Q.hold or 0) then
      -- its first ask is its grant (a ticket near now would only stand in the way of the
      -- asks meanwhile: where no quota binds, bulk jobs were told to wait behind such
      -- tickets, 10.0 -> 12.3 round trips a job on the mix at --rpm 1000000), unless the
      -- lane is over its share, where that ask would park it; a bulk slot to take would be
      -- past the hold, hence later than this one
      wanted = bulk_holds() and not may_jump()
      over = wanted
    elseif may_jump() then
      -- a bulk slot less than Q.hold away is left to its job: picked already, it is
      -- waiting in its worker for that slot, and would ask at it only to be deferred
      head = redis.call('ZRANGEBYSCORE', BTICKETS, '(' .. fmt(now + (Q.hold or 0)), '+inf',
        'WITHSCORES', 'LIMIT', 0, 1)
      if #head > 0 and tonumber(head[2]) < tail then at = tonumber(head[2]) else head = nil end
      over = false
    end
    if wanted and mark_ticket_of(id, at, now, true) then
      if tickets == nil then tickets = ticket_batch(false, tenant_counts()) end
      local dropped = false
      if head then
        retime(head[1], tail, true)
        -- another tenant's ticket waiting after the slot may take it; this job's marker,
        -- whose lifetime follows its slot, is written again for the later one
        local taken = yield_jump(at, field, tonumber(tickets.counts[field]) or 0, now,
          tickets.counts)
        if taken ~= at then
          at = taken
          mark_ticket_of(id, at, now, false)
        end
      else
        -- over its share, the displaced ticket is dropped, as acquire drops it: the lane's
        -- slots stay as many (the schedule's end is not taken)
        local function over_share()
          if over == nil then over = bulk_holds() end
          return over
        end
        local turn, lost = turn_at_admission(false, field, tickets.counts, tail, {}, tickets,
          over_share, now)
        if turn then at, dropped = turn, lost end
      end
      add_ticket(tickets, id, at, field)
      if held_inter ~= nil then held_inter = held_inter + 1 end
      if not dropped then st.tat = tail + plan.len end
      planned[#planned + 1] = id
      due[i] = queue_score(at)
    end
  end
  if tickets then write_tickets(tickets) end
  if #planned > 0 then state_write('tat', st.tat) end
  note_planned_audio(plan, planned)
  return due
end

-- Top up one tenant's interactive jobs in the queue (not yet granted) to
-- Q.interactive_direct (wire.INTERACTIVE_DIRECT) from its waiting list, or to one while the
-- lane is over its share (its one ticket's job: any more would only be parked again, see
-- limiter_acquire.lua); `room` >= 0 admits up to that many regardless (limits off, where
-- nothing is granted through here). Usually one job: the one whose grant made room.
local function admit_interactive(who, now, room, plan)
  if held(who) then return 0 end
  local admitted = Q.wait_prefix .. 'interactive:admitted:' .. who
  local list = Q.wait_prefix .. 'interactive:tenant:' .. who
  local tracked = admitted
  if room >= 0 then tracked = nil end
  local n, batch = 0, {}
  local waiting = redis.call('LLEN', list)
  -- the jobs admitted here join `admitted` at the end (admit_batch): counted as they go
  local before, cap = 0, Q.interactive_direct
  if room < 0 and waiting > 0 then
    -- an admitted job never granted (its worker died first) stops counting: swept where the
    -- count is read (enqueue.lua reads it too, and a job it sends to the list brings the
    -- tenant to the admission round, which sweeps); on every interactive grant it cost a
    -- command, most of them with no job waiting (issue #22)
    redis.call('ZREMRANGEBYSCORE', admitted, '-inf', now - Q.admit_ttl)
    before = redis.call('ZCARD', admitted)
    if before < cap and redis.call('ZCARD', BTICKETS) > 0 then
      local room = interactive_room(now)
      if room == 0 then
        cap = 1
      elseif plan == nil or math.max(plan.st.tat, now, plan.st.cd) - now <= (Q.hold or 0) then
        -- No plan, or the schedule's end within the hold: the jobs admitted get no ticket
        -- (plan_interactive) and ask at once, so no more of the tenant's are in the queue
        -- than the share still lets take a slot. Topped up to 16 just under the share, all
        -- but the first one or two were parked back here at their ask: a pick and about 20
        -- commands each (issue #22).
        cap = math.min(cap, room)
      end
    end
  end
  while waiting > 0 and ((room >= 0 and n < room) or (room < 0 and before + n < cap)) do
    local id = redis.call('LPOP', list)
    if not id then break end
    waiting = waiting - 1
    n = n + 1
    batch[n] = id
  end
  batch = still_queued(batch)
  n = #batch
  local planned = nil
  if plan ~= nil and tracked ~= nil and #batch > 0 then
    planned = plan_interactive(batch, who, plan)
  end
  admit_batch(batch, tracked, now, planned)
  if waiting <= 0 then redis.call('LREM', IRING, 0, who) end
  return n
end

-- Admission: bulk keeps `want` jobs admitted and not yet granted (a `want` below zero
-- admits up to -want without keeping the look-ahead: limits off); every tenant with waiting
-- interactive jobs is topped up (the first RING_ROUND of the ring, which turns).
local function admit(now, want, plan)
  local track = want >= 0
  -- an admitted job never granted (its worker died first) stops counting
  redis.call('ZREMRANGEBYSCORE', ADMITTED, '-inf', now - Q.admit_ttl)
  local room = -want
  if track then room = want - redis.call('ZCARD', ADMITTED) end
  local n = admit_from(RING, ADMITTED, Q.wait_prefix .. 'tenant:', room, track, now, plan)
  local iroom = -1
  if not track then iroom = -want end
  for _ = 1, math.min(redis.call('LLEN', IRING), RING_ROUND) do
    local who = redis.call('RPOPLPUSH', IRING, IRING)
    if not who then break end
    n = n + admit_interactive(who, now, iroom, plan)
  end
  forget_waiting_model()
  return n
end

-- After a grant: the granted job leaves its look-ahead and the next waiting job of its
-- lane (and tenant, for interactive) is admitted in its place. The bulk look-ahead is
-- topped up in batches, once a quarter of it has been granted (every grant when it is
-- under 8 jobs, as at MiMo's real pace): one admission per grant cost 7 commands; a
-- batch costs 3 a job (its turn of the ring, its pop, its list's length), 4 with a slot
-- (its marker), and 4 in all, 9 with slots (the batch's writes). O(1) per grant, amortized.
local function admit_after_grant(now, job, bulk, tenant, want, plan)
  if bulk then redis.call('ZREM', ADMITTED, job) end
  -- the bulk look-ahead either way (an interactive grant may have taken a bulk job's slot),
  -- and first: the interactive jobs admitted next see the bulk slots it holds, as their asks
  -- would. Admitted the other way round, a tenant's 16 came in with no bulk slot held yet
  -- (the lane could not be over its share), the look-ahead's tickets came next, and all but
  -- one or two of the 16 were parked at their asks (a burst's start, issue #22).
  local have = redis.call('ZCARD', ADMITTED)
  if have <= want - math.max(1, math.floor(want / 4)) then
    admit_from(RING, ADMITTED, Q.wait_prefix .. 'tenant:', want - have, true, now, plan)
  end
  if not bulk then
    local who = tenant or '_'
    redis.call('ZREM', Q.wait_prefix .. 'interactive:admitted:' .. who, job)
    admit_interactive(who, now, -1, plan)
  end
  -- the model leaves the set of models with waiting jobs in the admission round (admit),
  -- not here: that check cost 2-3 commands on every grant
end

-- Bulk jobs kept admitted ahead of the slots: `lookahead` seconds of slots, at least 2. A
-- model with a token limit keeps 2 until it has granted a call of known length (st.audio):
-- before, its admitted jobs get no slots (slot_plan) and would all be picked at once, most
-- only to learn their slots (the mix's first look-ahead: 196 of its 308 bulk
-- transcriptions, issue #22).
local function lookahead(per_request, st)
  if Q.tokens > 0 and st.audio == nil then return 2 end
  return math.max(2, math.ceil(Q.lookahead / per_request))
end
