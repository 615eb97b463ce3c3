-- next_free: seconds until this account+model could grant one more call (0: now), read
-- without reserving anything: what the account router compares the accounts by.
-- No ARGV beyond the configuration. No writes. Returns the seconds as text.
--
-- The next free slot is the end of the reserved schedule (GCRA's `tat`, which every ticket
-- pushed out), or the end of a 429's cool-down; with the in-flight cap reached, no slot
-- is free before about one call's share of the latency has passed (as acquire defers).

bind(KEYS, ARGV)
local now = now_s()
local st = load_state()
local per_request = spacing(factor(st, now))
local free = math.max(st.tat - (Q.burst - 1) * per_request, st.cd, now)
if Q.max_in_flight > 0 then
  local in_flight = redis.call('ZCOUNT', LEASES, '(' .. fmt(now), '+inf')
  if in_flight >= Q.max_in_flight then
    local latency = st.lat or 1
    free = math.max(free, now + math.min(math.max(latency / Q.max_in_flight, 0.05), 5))
  end
end
return fmt(free - now)
