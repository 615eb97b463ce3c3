-- snapshot: read one limiter's state for `mimoq limits` and capacity planning (no writes).
-- Returns {now, factor, cool-down left, requests and tokens in the last window, leases in
-- flight, tickets, ticket backlog s, tokens per audio s, latency EWMA (-1: none), its
-- mean deviation, 429s seen, lag EWMA (-1: none), guard margin, bulk and interactive
-- tickets, admitted,
-- interactive grants in the last window, grants per lane/tenant (flat field/value list),
-- waiting depth per tenant (flat tenant/depth list), tickets held per "lane:tenant" (flat
-- list; empty past 2 x max_tenants of them), tokens per call besides the audio's, how late
-- ticket holders ask for their slots (EWMA, -1: none measured)}.

bind(KEYS, ARGV)
local now = now_s()
local st = load_state()
local f = factor(st, now)
local recent = redis.call('ZRANGEBYSCORE', LOG, '(' .. fmt(now - Q.window), '+inf')
local tokens = 0
for _, n in ipairs(tokens_of(recent)) do tokens = tokens + n end
local in_flight = redis.call('ZCOUNT', LEASES, '(' .. fmt(now), '+inf')
local live = '(' .. fmt(now - Q.ticket_grace)
-- each lane's live tickets (a stale one is swept by the next decision's housekeeping)
local bulk_tickets = redis.call('ZCOUNT', BTICKETS, live, '+inf')
local inter_tickets = redis.call('ZCOUNT', ITICKETS, live, '+inf')
local tickets = bulk_tickets + inter_tickets
local backlog = 0
-- (the last ticket is live when any is: it is the latest)
if tickets > 0 then backlog = math.max(0, tonumber(last_ticket()[2]) - now) end
local waiting = {}
-- the ring holds each tenant with waiting jobs once; its length is the number of tenants
for _, tenant in ipairs(redis.call('LRANGE', RING, 0, Q.max_tenants - 1)) do
  waiting[#waiting + 1] = tenant
  waiting[#waiting + 1] = redis.call('LLEN', Q.wait_prefix .. 'tenant:' .. tenant)
end
-- the counts: the lanes hash's (grants per lane and tenant, and the counters older versions
-- kept there) with the state's counters (its "c:" fields, as load_state read them), summed
local counts, names = {}, {}
local function add_count(name, value)
  if counts[name] == nil then names[#names + 1] = name end
  counts[name] = (counts[name] or 0) + (tonumber(value) or 0)
end
local lanes = redis.call('HGETALL', LANES)
for i = 1, #lanes, 2 do add_count(lanes[i], lanes[i + 1]) end
for field, value in pairs(STATE_READ) do
  if string.sub(field, 1, 2) == 'c:' then add_count(string.sub(field, 3), value) end
end
local counted = {}
for i = 1, #names do
  counted[2 * i - 1], counted[2 * i] = names[i], counts[names[i]]
end
local held = {}
if redis.call('HLEN', TENANT_TICKETS) <= 4 * Q.max_tenants then
  local all = redis.call('HGETALL', TENANT_TICKETS)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 5) ~= 'last:' then
      held[#held + 1] = all[i]
      held[#held + 1] = all[i + 1]
    end
  end
end
return {
  fmt(now), fmt(f), fmt(math.max(0, st.cd - now)), #recent, tokens, in_flight, tickets,
  fmt(backlog), fmt(st.tok_rate), fmt(st.lat or -1), fmt(st.lat_dev), st.n429,
  fmt(st.lag or -1), fmt(margin(st)), bulk_tickets, inter_tickets,
  redis.call('ZCARD', ADMITTED),
  redis.call('ZCOUNT', ILOG, '(' .. fmt(now - Q.window), '+inf'),
  counted, waiting, held, fmt(st.tok_base or Q.call_tokens),
  fmt(st.late or -1),
}
