-- rate_limited: MiMo answered 429. Pause the model fleet-wide and step the rate down.
-- ARGV[2]: JSON {retry_after (seconds, -1: none sent), pause (the default), decrease}.
-- Returns {1 if the rate was stepped down (0: already cooling down), pause end - now}.
--
-- The step depends on the history: a 429 after CLEAN_WINDOWS windows without one is most
-- likely the spread between our grant times and MiMo's receive times, not a wrong rate;
-- it steps down by Q.first_decrease (0.9) and regains the step within one window. A 429
-- within CLEAN_WINDOWS of the last one steps down by `decrease` (0.7) and recovers at the
-- configured additive rate, as a real overload needs.

bind(KEYS, ARGV)
local R = cjson.decode(ARGV[2])
local retry_after = tonumber(R.retry_after)
local default_pause = tonumber(R.pause)
local decrease = tonumber(R.decrease)
local CLEAN_WINDOWS = 3

local now = now_s()
local st = load_state()
housekeep(st, now)
local pause = default_pause
if retry_after >= 0 then pause = retry_after end
local resume = now + pause

-- Move every reserved slot with `map`, keeping their order: in bulk (retime_all), a
-- constant number of commands however many tickets there are, where moving them one at a
-- time cost about six per ticket (a 429 with a queue of 200 tickets cost 1,000 commands).
-- `ids`, `times`, `bulk`: the schedule as all_tickets gives it.
local function move_backlog(ids, times, bulk, map)
  local at = {}
  for i = 1, #ids do at[ids[i]] = map(times[i]) end
  retime_all(ids, at, bulk)
end

-- When the hard guard (limiter_acquire.lua guard_wait) has room for one more grant at the
-- lower rate factor `f_new`: `resume`, or later while the window still holds more of the
-- grants made at the old rate than that rate's cap. Tickets planned from the pause's end
-- were held back by the guard there one after another and sent to the schedule's end, out
-- of their order, each asking again (about 0.1 asks a job of the issue #22 mix, whose
-- calls answer 429 at random one time in 25). The cap is taken at `f_new`, as it is when
-- the pause ends: it only grows after, so the room is never found too early. (The token
-- guard of a token-limited model still holds its calls back as before.)
local function guard_room_after(resume, f_new)
  local guard = Q.window + margin(st)
  local since = '(' .. fmt(now - guard)
  local n = redis.call('ZCOUNT', LOG, since, '+inf')
  local cap = math.max(1, math.floor(Q.requests * f_new + 1e-9))
  if n + 1 <= cap then return resume end
  -- the (n + 1 - cap) oldest grants of the window must leave it first
  local oldest = redis.call('ZRANGEBYSCORE', LOG, since, '+inf', 'WITHSCORES', 'LIMIT', n - cap, 1)
  return math.max(resume, tonumber(oldest[2]) + guard)
end

local stepped = 0
if now >= st.cd then
  -- A fresh congestion signal. The 429s of calls already in flight land inside the pause
  -- that follows and must not step the rate down again (one decrease per episode).
  local clean = st.last429 == nil or now - st.last429 > CLEAN_WINDOWS * Q.window
  local step, rec = decrease, Q.recovery
  if clean then
    step = Q.first_decrease
    rec = math.max(Q.recovery, 1 - Q.first_decrease)
  end
  local f = factor(st, now)
  local f_new = math.max(MIN_FACTOR, f * step)
  local stretch = f / f_new
  -- the queue (or, with none, the next free slot) restarts when the pause ends and the
  -- hard guard has room at the lower rate, in the same order and spaced for that rate
  local start = guard_room_after(resume, f_new)
  local base = math.max(st.tat, now)
  local ids, times, bulk = all_tickets()
  if #ids > 0 then base = times[1] end
  local function replanned(slot) return start + (math.max(slot, base) - base) * stretch end
  move_backlog(ids, times, bulk, replanned)
  state_write('tat', fmt(replanned(math.max(st.tat, now))), 'f', fmt(f_new),
    'f_at', fmt(resume), 'cd', fmt(resume), 'plan_f', fmt(f_new), 'plan_rate', fmt(st.tok_rate),
    'rec', fmt(rec), 'last429', fmt(now), 'ptat', fmt(start))
  stepped = 1
elseif resume > st.cd then
  -- a later Retry-After during the pause: pause longer, same rate
  local delta = resume - st.cd
  local ids, times, bulk = all_tickets()
  move_backlog(ids, times, bulk, function(slot) return slot + delta end)
  state_write('tat', fmt(math.max(st.tat, now) + delta), 'f_at', fmt(resume),
    'cd', fmt(resume), 'ptat', fmt(resume))
else
  resume = st.cd
end
state_write('n429', st.n429 + 1)
touch(st, now)
return {stepped, fmt(resume - now)}
