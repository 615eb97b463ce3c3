-- rate_limited: MiMo answered 429. Pause the model fleet-wide and step the rate down.
-- ARGV after the quota: Retry-After seconds (-1: none sent), default pause, decrease factor.
-- Returns {1 if the rate was stepped down (0: already cooling down), pause end - now}.

local retry_after = tonumber(ARGV[NCOMMON + 1])
local default_pause = tonumber(ARGV[NCOMMON + 2])
local decrease = tonumber(ARGV[NCOMMON + 3])

local now = now_s()
housekeep(now)
local st = load_state()
local pause = default_pause
if retry_after >= 0 then pause = retry_after end
local resume = now + pause

-- Move every reserved slot (and the schedule's end) with `map`, keeping their order.
local function move_backlog(map)
  local tickets = redis.call('ZRANGE', TICKETS, 0, -1, 'WITHSCORES')
  for i = 1, #tickets, 2 do
    redis.call('ZADD', TICKETS, map(tonumber(tickets[i + 1])), tickets[i])
  end
end

local stepped = 0
if now >= st.cd then
  -- A fresh congestion signal. The 429s of calls already in flight land inside the pause
  -- that follows and must not step the rate down again (one decrease per episode).
  local f = factor(st, now)
  local f_new = math.max(MIN_FACTOR, f * decrease)
  local stretch = f / f_new
  -- the queue (or, with none, the next free slot) restarts when the pause ends, in the
  -- same order and spaced for the lower rate
  local base = math.max(st.tat, now)
  local first = redis.call('ZRANGE', TICKETS, 0, 0, 'WITHSCORES')
  if #first > 0 then base = tonumber(first[2]) end
  local function replanned(slot) return resume + (math.max(slot, base) - base) * stretch end
  move_backlog(replanned)
  redis.call('HSET', STATE, 'tat', replanned(math.max(st.tat, now)), 'f', f_new, 'f_at', resume, 'cd', resume,
    'plan_f', fmt(f_new), 'plan_rate', fmt(st.tok_rate))
  stepped = 1
elseif resume > st.cd then
  -- a later Retry-After during the pause: pause longer, same rate
  local delta = resume - st.cd
  move_backlog(function(slot) return slot + delta end)
  redis.call('HSET', STATE, 'tat', math.max(st.tat, now) + delta, 'f_at', resume, 'cd', resume)
else
  resume = st.cd
end
redis.call('HINCRBY', STATE, 'n429', 1)
touch()
return {stepped, fmt(resume - now)}
