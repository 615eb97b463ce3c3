-- acquire: grant one MiMo call now, or say when to come back (holding a ticket when queued;
-- a ticket more than HORIZON ahead is re-read half-way there).
-- ARGV[2]: the call as JSON {job, lease, audio (seconds, token-limited models), measured
-- (whether audio is the job's own, not the charge of an unknown length), lane
-- ("interactive" | "bulk"), tenant (optional)}.
-- Returns {decision, wait_s, tokens charged, now}.

bind(KEYS, ARGV)
local A = cjson.decode(ARGV[2])
local job_id, lease_id = A.job, A.lease
local audio_s = tonumber(A.audio) or 0
local bulk = A.lane == 'bulk'
local tenant = A.tenant
if tenant == cjson.null then tenant = nil end
-- a ticket holder back this little before its slot is served (arq rounds defers to ms)
local EARLY = 0.002
-- a guard wait is stretched by this so the blocking grant has surely left the window
local EPSILON = 0.002

local now = now_s()

-- The job's cancel marker (README, "Cancel"): cancel.lua and this script read it
-- atomically, so a job is either granted before its cancel (then it is in flight) or never.
-- It is read where this decision writes it: the grant's SET and a ticket's (mark_ticket)
-- replace it with GET, which returns it. Only a decision that writes no marker (a deferral
-- or a park) reads it on its own (cancel_seen). Read first, on every ask, it cost a command
-- that most asks then overwrote: 1.3 a job of the issue's mix (issue #22).
local MARKER = Q.cancel_prefix .. job_id
-- whether this call has read the marker already (through a SET ... GET)
local marker_read = false

-- The answer to a cancelled job: what it held goes back, its ticket (one just given, too)
-- and its admission place.
local function cancelled()
  drop_ticket(job_id, bulk)
  redis.call('ZREM', ADMITTED, job_id)
  redis.call('ZREM', Q.wait_prefix .. 'interactive:admitted:' .. (tenant or '_'), job_id)
  return {'cancelled', fmt(0), 0, fmt(now)}
end

-- Whether the marker says cancelled, for a decision that writes none.
local function cancel_seen()
  if marker_read then return false end
  marker_read = true
  return redis.call('GET', MARKER) == 'cancelled'
end

-- A job given a ticket says where it is in its marker (mark_ticket_of): one SET per ticket
-- given; the grant's SET overwrites it. False: a cancel came first (the caller answers
-- cancelled()).
local function mark_ticket(at, now)
  marker_read = true
  return mark_ticket_of(job_id, at, now, false)
end

local st = load_state()
housekeep(st, now)
local f = factor(st, now)
-- the rate recovering after a 429 (or a new calibration) re-spaces the queue
replan_if_drifted(st, f, now)
local cost = call_cost(st, audio_s)
local per_request = spacing(f)
local len = slot_length(f, cost, st)
local guard = Q.window + margin(st)

-- Seconds until one more grant of `cost` tokens fits the hard guard: at most the quota
-- (scaled down by the AIMD factor) in any guard-long window of actual grant times.
local function guard_wait()
  local since = '(' .. fmt(now - guard)
  local n = redis.call('ZCOUNT', LOG, since, '+inf')
  local wait = 0
  local cap = math.max(1, math.floor(Q.requests * f + 1e-9))
  if n + 1 > cap then
    -- the (n + 1 - cap) oldest grants of the window must leave it first
    local oldest = redis.call('ZRANGEBYSCORE', LOG, since, '+inf', 'WITHSCORES', 'LIMIT', n - cap, 1)
    wait = tonumber(oldest[2]) + guard - now
  end
  if Q.tokens > 0 and n > 0 then
    local tcap = math.max(1, math.floor(Q.tokens * f + 1e-9))
    local log = redis.call('ZRANGEBYSCORE', LOG, since, '+inf', 'WITHSCORES')
    local ids = {}
    for i = 1, n do ids[i] = log[2 * i - 1] end
    local charged = tokens_of(ids)
    local used = 0
    for i = 1, n do used = used + charged[i] end
    local i = 0
    -- a call larger than the whole quota still goes once the window is empty
    while i < n and used + cost > tcap do
      i = i + 1
      used = used - charged[i]
    end
    if i > 0 then wait = math.max(wait, tonumber(log[2 * i]) + guard - now) end
  end
  if wait > 0 then wait = wait + EPSILON end
  return wait
end

-- Seconds until the pace allows a grant: GCRA over the actual grant times with a
-- tolerance of PACE_TOLERANCE slots (with the default burst of 1), so never two grants
-- closer than a quarter slot and never more than the paced rate + 1.75 over any run of
-- grants, whatever stalls came before (the pace restarts from the last grant: slots nobody
-- used are not made up). The tolerance absorbs the holders' jitter: a holder back late by
-- less than 3/4 of a slot more than the one before it is still served in its slot.
-- Where the holders' measured lateness (st.late + LATE_SPREAD deviations) is longer than
-- that, as on a quota compressed to slots of a few milliseconds, the tolerance is that long,
-- up to LATE_CAP seconds (a busy host's timer and event-loop jitter, not a stall: holders
-- back late by more, as after a stalled worker, are re-spaced one per slot as before,
-- tests/worker/test_scheduling.py). There a holder on time behind one a few milliseconds late
-- was held back, given its slot again and asked once more (665 times in a run of the issue
-- #22 mix, about 14 commands each: bench/limiter_asks.py). At MiMo's real pace
-- (100 calls a minute: 0.6 s slots) 3/4 of a slot is far longer than such lateness, and
-- the pace is as before. The hard guard counts every window whatever the pace allows.
local PACE_TOLERANCE = 0.75
local LATE_SPREAD = 2
local LATE_CAP = 0.05
local function pace_wait()
  local tolerance = PACE_TOLERANCE * per_request
  if st.late ~= nil then
    tolerance = math.max(tolerance, math.min(st.late + LATE_SPREAD * st.late_dev, LATE_CAP))
  end
  local wait = st.ptat - (Q.burst - 1) * per_request - tolerance - now
  -- A wait under EARLY is rounding, not pace: ptat and now are epoch seconds near 1.8e9,
  -- where one float step is 2.4e-7 s, and a "wait 2.4e-7 s" answer sent the job round
  -- again at the same instant (a livelock on an injected clock; wasted trips on a real one).
  if wait > EARLY then return wait end
  return 0
end

local function in_flight_wait()
  -- with the cap reached, one call ends about every latency / cap seconds
  local latency = st.lat or 1
  return math.min(math.max(latency / Q.max_in_flight, 0.05), 5)
end

-- The EWMA weight of a granted call's audio in the model's typical audio (slot_plan)
local AUDIO_ALPHA = 0.2
-- The EWMA weight of a granted holder's lateness (about the last 10 holders)
local LATE_ALPHA = 0.1

-- Fold a granted holder's lateness (`late` seconds after its slot) into st.late and
-- st.late_dev (pace_wait). A holder later than the cap counts as that late: a stalled
-- worker says nothing of the fleet's jitter.
local function note_late(late)
  late = math.min(late, LATE_CAP)
  if st.late == nil then
    st.late, st.late_dev = late, 0
  else
    st.late_dev = st.late_dev + LATE_ALPHA * (math.abs(late - st.late) - st.late_dev)
    st.late = st.late + LATE_ALPHA * (late - st.late)
  end
  state_write('late', st.late, 'late_dev', st.late_dev)
end

-- `tat`: the schedule's new end, when this grant moves it;
-- `paced`: the slot length the pace moves by, when not the call's own (settle_planned);
-- `late`: how late a ticket holder asked for its slot (nil: not a holder)
local function grant(tat, paced, late)
  if redis.call('SET', MARKER, 'granted', 'PX', math.floor(Q.lease_ttl * 1000), 'GET')
      == 'cancelled' then
    restore_cancelled(job_id)
    return cancelled()
  end
  redis.call('ZADD', LOG, now, lease_id)
  if cost > 0 then redis.call('HSET', TOKENS, lease_id, cost) end
  redis.call('ZADD', LEASES, now + Q.lease_ttl, lease_id)
  state_write('ptat', math.max(st.ptat, now) + (paced or len))
  if tat then state_write('tat', tat, 'owed', st.owed) end
  if Q.tokens > 0 and A.measured and audio_s > 0 then
    -- the typical audio admission sizes this model's slots on
    if st.audio == nil then
      st.audio = audio_s
    else
      st.audio = st.audio + AUDIO_ALPHA * (audio_s - st.audio)
    end
    state_write('audio', st.audio)
  end
  if late then note_late(late) end
  if not bulk then redis.call('ZADD', ILOG, now, lease_id) end
  note_grant(bulk)
  -- one count per lane and tenant ("g:bulk:t-a"): the snapshot's reader sums it into the
  -- grants per lane and per tenant (worker/limiter/core.py _lanes), one HINCRBY a grant
  redis.call('HINCRBY', LANES, 'g:' .. tenant_field(bulk, tenant), 1)
  -- the granted job leaves the look-ahead; admit the next waiting job(s) in its place, their
  -- slots after the schedule's end as this grant left it
  if tat then st.tat = tat end
  admit_after_grant(now, job_id, bulk, tenant, lookahead(per_request, st), slot_plan(st, f, now))
  touch(st, now)
  return {'granted', fmt(0), cost, fmt(now)}
end

-- The decisions after which the job holds a reserved slot (core.py HOLDS_SLOT).
local HOLDS_SLOT = {ticket = true, cooldown = true, guard = true, paced = true}

-- Put the job's place in arq's queue where its worker would defer it to (1), unless the
-- worker waits for the slot in-process (0: the slot is within Q.hold and A.last is not
-- set): Q.hold before a held slot (already past for a slot within Q.hold: queue_score),
-- else at `wait`, on the same millisecond grid (core.py _seconds). A job holding a ticket
-- is always placed Q.hold before the time it is to ask again (`holds`: its in-flight wait
-- too): its worker reads that time back from the place (limiter.core.QUEUED_TICKET). Set
-- here as an absolute score, not by arq's relative move: a ticket's move (retime) moves
-- its holder's queue score, which a relative move would add to. 0 too for a job not in the
-- queue (a caller outside arq): its worker defers it.
local function requeue(wait, reason, holds)
  local at
  if HOLDS_SLOT[reason] and wait <= Q.hold and not A.last then return 0 end
  if HOLDS_SLOT[reason] or holds then
    at = math.ceil((now + math.ceil(wait * 1000) / 1000 - (Q.hold or 0)) * 1000)
  else
    at = math.ceil((now + math.max(math.ceil(wait * 1000) / 1000, 0.001)) * 1000)
  end
  if redis.call('ZADD', QUEUE, 'XX', 'CH', at, job_id) == 1 then return 1 end
  if redis.call('ZSCORE', QUEUE, job_id) then return 1 end
  return 0
end

local function defer(wait, reason, holds)
  if cancel_seen() then return cancelled() end
  touch(st, now)
  return {reason, fmt(wait), cost, fmt(now), requeue(wait, reason, holds)}
end

local function reason_now()
  if st.cd > now then return 'cooldown' end
  return 'ticket'
end

-- A due ticket holder (or a new job at a free slot) the pace or the guard holds back is
-- re-spaced: a bulk job gets the next slot after the schedule's end instead of coming back
-- with every other held-back holder at once (which is how bursts happened); an
-- interactive one keeps its place ahead of bulk and comes back as soon as the pace allows.
local function respace(wait, reason)
  count_up('respaced:' .. reason, 1)
  -- A token-limited model's interactive holder goes to the end as well when another
  -- interactive ticket falls due by then: where the hard guard holds calls of varied lengths
  -- back, the held-back holders came back at the pace's next slot together with the holder
  -- planned there, and all but one were held back again, at every grant after (3.8-4.5
  -- asks a job; 1.8 now, issue #22).
  if not bulk and (Q.tokens <= 0 or redis.call('ZCOUNT', ITICKETS, '-inf', now + wait) <= 1) then
    set_ticket(job_id, now + wait, false, tenant)
    if not mark_ticket(now + wait, now) then return cancelled() end
    return defer(come_back_in(wait), reason)
  end
  local at = math.max(st.tat, now + wait)
  set_ticket(job_id, at, bulk, tenant)
  if not mark_ticket(at, now) then return cancelled() end
  if Q.tokens > 0 then redis.call('HSET', TICKET_AUDIO, job_id, audio_s) end
  state_write('tat', at + len)
  return defer(come_back_in(at - now), reason)
end

-- Whether the job may take the earliest ticket of the other lane. Interactive: the rule
-- of interactive_may_jump (limiter_common.lua). Bulk: while the bulk lane's grants are
-- below its share (bulk < interactive x m / (1 - m)), so that interactive work arriving
-- faster than its share cannot push bulk below m. Each count is read only when the answer
-- still depends on it (bulk grants are never below zero): with no interactive grant in the
-- window, a bulk job never jumps.
local function may_jump()
  if not bulk then return interactive_may_jump(now) end
  local m = Q.bulk_min_share
  if m <= 0 then return false end
  if m >= 1 then return true end
  local inter = recent_grants(now, true)
  if inter == 0 then return false end
  return recent_grants(now, false) - inter < inter * m / (1 - m)
end

-- leases still running (an expired one's worker died; housekeeping drops it later)
local full = Q.max_in_flight > 0
  and redis.call('ZCOUNT', LEASES, '(' .. fmt(now), '+inf') >= Q.max_in_flight

-- A token-limited model's ticket given at admission was sized on the model's typical audio
-- (slot_plan). Granted, the schedule's end moves by the difference from the job's own (as a
-- release settles its tokens: a credit never pulls the end in front of a queued ticket),
-- and the pace moves by the planned length: the next tickets were planned after it, and a
-- longer call than planned would have the pace re-space each of them to the end. The hard
-- guard still counts the call's own tokens. Returns the new end (nil: it does not move) and
-- the planned slot's length (nil: not a planned ticket).
local function settle_planned()
  if Q.tokens <= 0 then return nil, nil end
  local planned = tonumber(redis.call('HGET', TICKET_AUDIO, job_id))
  if planned == nil or planned == audio_s then return nil, nil end
  local planned_len = slot_length(f, call_cost(st, planned), st)
  local shift = len - planned_len
  if shift == 0 then return nil, nil end
  local floor = 0
  if shift < 0 then
    local last = last_ticket()
    if #last > 0 and last[1] ~= job_id then floor = tonumber(last[2]) + per_request end
  end
  return settle_shift(st, math.max(st.tat, now), shift, floor, per_request, now), planned_len
end

-- How far the pace moves for the holder of the bulk ticket at `ticket`: `paced`, or less
-- when the next bulk ticket is nearer. A token-limited model's credits (a call shorter than
-- its slot) place the tickets admitted after them earlier than the slots before them were
-- long; paced by those slots' length, the holder of such a ticket was held back at its slot
-- (by a few milliseconds), sent to the schedule's end, and its slot went unused: a tenth of
-- the token quota on bulk transcriptions of varied lengths (issue #22). The tickets are the
-- schedule; the hard guard still counts every window.
local function paced_to_next(paced, ticket)
  -- (bulk only: paced so on interactive transcriptions of varied lengths, the guard let one
  -- 429 through in each of three runs)
  if Q.tokens <= 0 or not bulk then return paced end
  local after = redis.call('ZRANGEBYSCORE', lane_tickets(bulk), '(' .. fmt(ticket), '+inf',
    'WITHSCORES', 'LIMIT', 0, 1)
  if #after > 0 then return math.min(paced, math.max(tonumber(after[2]) - ticket, 0)) end
  return paced
end

-- (a ticket is in its job's own lane: only there is it looked for)
local ticket = tonumber(redis.call('ZSCORE', lane_tickets(bulk), job_id))
if ticket then
  -- a job that was queued earlier: its slot is already paid for in the schedule
  local due = math.max(ticket, st.cd)
  if due - now > EARLY then return defer(come_back_in(due - now), reason_now()) end
  if full then return defer(in_flight_wait(), 'in_flight', true) end
  local g = guard_wait()
  if g > 0 then return respace(g, 'guard') end
  local p = pace_wait()
  if p > 0 then return respace(p, 'paced') end
  -- its ticket is in its own lane, counted under its own lane and tenant
  local tat, paced = settle_planned()
  paced = paced_to_next(paced or len, ticket)
  drop_ticket(job_id, bulk, tenant_field(bulk, tenant))
  return grant(tat, paced, math.max(now - due, 0))
end

-- No slot is reserved while the in-flight cap is full: it would pass unused.
if full then return defer(in_flight_wait(), 'in_flight') end

-- GCRA: the next free slot is `tat`; `burst - 1` slots may be taken early after idling.
local start = math.max(st.tat - (Q.burst - 1) * per_request, now, st.cd)
if start <= now then
  local wait = math.max(guard_wait(), pace_wait())
  if wait <= 0 then
    return grant(math.max(st.tat, now) + len)
  end
  start = now + wait
end

-- The time of the latest ticket this job's tenant holds in its lane, once read (false:
-- none; nil: not read yet): the new ticket's note_last needs it.
local own_last = nil
-- The tickets this job's tenant holds in its lane, once read with own_last (nil: not yet).
local own_held = nil

-- This job takes the slot of ticket `moved` (at `slot`), which moves to the schedule's end
-- (or, with `drop`, loses its ticket: it asks again as a newcomer): granted now if that
-- slot is due, else it holds the slot as its ticket. `moved_bulk` is its lane;
-- `moved_field` its "lane:tenant" and `moved_last` its tenant's latest ticket, when
-- already read (nil: read them here, with this job's own latest ticket in the same HMGET).
local function take_slot_of(moved, slot, drop, moved_bulk, moved_field, moved_last)
  if drop then
    -- (an interactive ticket of another tenant: `drop` is the lane over its share)
    drop_turned(moved, moved_field, slot, now)
  else
    local moved_audio = 0
    if Q.tokens > 0 then moved_audio = tonumber(redis.call('HGET', TICKET_AUDIO, moved)) or 0 end
    local moved_len = slot_length(f, call_cost(st, moved_audio), st)
    local tail = math.max(st.tat, start)
    if moved_field == nil then
      moved_field = redis.call('HGET', TICKET_TENANT, moved)
      -- (the moved ticket is the other lane's: its field is never this job's)
      if moved_field and own_last == nil then
        local mine = tenant_field(bulk, tenant)
        local lasts = redis.call('HMGET', TENANT_TICKETS, 'last:' .. moved_field,
          'last:' .. mine, mine)
        moved_last, own_last = tonumber(lasts[1]) or false, tonumber(lasts[2]) or false
        own_held = tonumber(lasts[3]) or 0
      end
    end
    retime(moved, tail, moved_bulk, moved_field, moved_last)
    st.tat = tail + moved_len
    state_write('tat', st.tat)
  end
  local at = math.max(slot, now)
  if moved_bulk and not bulk then
    -- an interactive job's jump: another tenant's ticket waiting after it may take the slot
    local mine = tenant_field(bulk, tenant)
    if own_held == nil then
      local counts = redis.call('HMGET', TENANT_TICKETS, mine, 'last:' .. mine)
      own_held, own_last = tonumber(counts[1]) or 0, tonumber(counts[2]) or false
    end
    at = yield_jump(at, mine, own_held, now)
  end
  if at - now <= EARLY and guard_wait() <= 0 and pace_wait() <= 0 then
    return grant()
  end
  set_ticket(job_id, at, bulk, tenant, own_last, own_held)
  if not mark_ticket(at, now) then return cancelled() end
  if Q.tokens > 0 then redis.call('HSET', TICKET_AUDIO, job_id, audio_s) end
  return defer(come_back_in(math.max(at - now, 0.001)), reason_now())
end

-- Take the earliest ticket of the other lane when the lane shares allow it (interactive
-- ahead of bulk; bulk back to its minimum share).
if may_jump() then
  local other = BTICKETS
  if bulk then other = ITICKETS end
  local head = redis.call('ZRANGE', other, 0, 0, 'WITHSCORES')
  if #head > 0 and tonumber(head[2]) < start then
    return take_slot_of(head[1], tonumber(head[2]), false, not bulk)
  end
end

-- An interactive job over its lane's share while bulk jobs hold slots takes no new slot:
-- it would queue ahead of the bulk jobs admitted later and push bulk under its share.
local over_share = not bulk and redis.call('ZCARD', BTICKETS) > 0

-- Tenants take turns within a lane: a job whose tenant holds at least two tickets fewer
-- than the tenant of a ticket past its own latest one takes that slot: the first such
-- ticket from the second after its latest on (one ticket of someone else stays between two
-- of its own: every other slot while the counts differ; turn_candidates), and the job it
-- displaces moves to the schedule's end, or, when the lane is over its share, loses its
-- ticket (the lane's slots stay as many). Two tenants holding as many tickets as each other
-- never swap. O(1): a read of at most TURN_SCAN tickets, their tenants and their counts.
local mine = tenant_field(bulk, tenant)
local counts = redis.call('HMGET', TENANT_TICKETS, mine, 'last:' .. mine)
local held = tonumber(counts[1]) or 0
own_last = tonumber(counts[2]) or false
own_held = held
-- (bulk: none within the hold, whose holders are waiting in workers: turn_candidates)
local candidates = turn_candidates(bulk, own_last, start, now)
if #candidates > 0 then
  local fields = candidate_fields(candidates, {})
  -- the other tenants' counts, and their latest tickets for the displaced ticket's move:
  -- one HMGET
  local asked, seen = {}, {}
  for i = 1, #fields do
    local theirs = fields[i]
    if theirs and theirs ~= mine and not seen[theirs] then
      seen[theirs] = true
      asked[#asked + 1] = theirs
      asked[#asked + 1] = 'last:' .. theirs
    end
  end
  if #asked > 0 then
    local theirs_counts = {}
    local read = redis.call('HMGET', TENANT_TICKETS, unpack(asked))
    for i = 1, #asked do theirs_counts[asked[i]] = read[i] end
    local k = turn_position(fields, mine, held, theirs_counts)
    if k then
      local theirs = fields[k]
      count_up('turns', 1)
      return take_slot_of(candidates[2 * k - 1], tonumber(candidates[2 * k]), over_share, bulk,
        theirs, tonumber(theirs_counts['last:' .. theirs]) or false)
    end
  end
end

-- Over its share, a job whose tenant holds a ticket in the lane already is parked: out of
-- arq's queue, back at the head of its tenant's waiting list, from where admission brings
-- it back when its tenant's ticket is granted (admit_interactive: one job at a time while
-- the lane is over its share). A tenant with none queues a ticket (one per tenant over the
-- share at most), so it is never left to race a flood's many jobs for the slot the share
-- frees. Before, each parked job asked again whenever the schedule had run, and was
-- deferred again until its tenant's turn: a pick and a decision, about 28 commands, each
-- time (issue #22). A job not in arq's queue (a caller outside arq) asks again instead
-- (park_job, limiter_common.lua).
if over_share and held > 0 then
  if cancel_seen() then return cancelled() end
  if park_job(job_id, tenant) then
    touch(st, now)
    return {'parked', fmt(0), cost, fmt(now), 1}
  end
  return defer(math.max(st.tat - now, per_request), 'share')
end

-- Queue: reserve the slot for this job, so it is served at `start` ahead of later arrivals.
set_ticket(job_id, start, bulk, tenant, own_last, own_held)
if not mark_ticket(start, now) then return cancelled() end
-- what a re-plan needs to re-size the slot
if Q.tokens > 0 then redis.call('HSET', TICKET_AUDIO, job_id, audio_s) end
state_write('tat', math.max(st.tat, start) + len)
return defer(come_back_in(start - now), reason_now())
