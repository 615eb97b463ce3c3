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
  -- the queue (or, with none, the next free slot) restarts when the pause ends, in the
  -- same order and spaced for the lower rate
  local base = math.max(st.tat, now)
  local ids, times, bulk = all_tickets()
  if #ids > 0 then base = times[1] end
  local function replanned(slot) return resume + (math.max(slot, base) - base) * stretch end
  move_backlog(ids, times, bulk, replanned)
  redis.call('HSET', STATE, 'tat', fmt(replanned(math.max(st.tat, now))), 'f', fmt(f_new),
    'f_at', fmt(resume), 'cd', fmt(resume), 'plan_f', fmt(f_new), 'plan_rate', fmt(st.tok_rate),
    'rec', fmt(rec), 'last429', fmt(now), 'ptat', fmt(resume))
  stepped = 1
elseif resume > st.cd then
  -- a later Retry-After during the pause: pause longer, same rate
  local delta = resume - st.cd
  local ids, times, bulk = all_tickets()
  move_backlog(ids, times, bulk, function(slot) return slot + delta end)
  redis.call('HSET', STATE, 'tat', fmt(math.max(st.tat, now) + delta), 'f_at', fmt(resume),
    'cd', fmt(resume), 'ptat', fmt(resume))
else
  resume = st.cd
end
redis.call('HINCRBY', STATE, 'n429', 1)
touch(st, now)
return {stepped, fmt(resume - now)}
