-- release_tenant: a tenant held at its limit (MIMOQ_TENANT_LIMITS, worker/tenant_gate.py)
-- gives back every ticket it holds in this limiter. Its jobs come back to the gate, not to
-- their slots, so each slot they reserved would pass unused (a whole look-ahead per hit).
-- Each freed slot, earliest first, is taken by the schedule's last ticket, its job brought
-- forward in the queue by as much (as cancel.lua gives one cancelled job's slot back), and
-- the schedule ends where the last moved ticket was. O(tickets): the look-ahead only.
-- ARGV[2]: JSON {tenant (optional)}. Returns the number of tickets released.

bind(KEYS, ARGV)
local A = cjson.decode(ARGV[2])
local tenant = A.tenant
if tenant == cjson.null then tenant = nil end
local mine = {[tenant_field(true, tenant)] = true, [tenant_field(false, tenant)] = true}

local owners = redis.call('HGETALL', TICKET_TENANT)
local freed = {}
for i = 1, #owners, 2 do
  if mine[owners[i + 1]] then
    -- its field names its lane (tenant_field): no read of either
    local bulk = owners[i + 1] == tenant_field(true, tenant)
    local at = tonumber(redis.call('ZSCORE', lane_tickets(bulk), owners[i]))
    drop_ticket(owners[i], bulk, owners[i + 1])
    if at then freed[#freed + 1] = at end
  end
end
if #freed == 0 then return 0 end
table.sort(freed)

local st = load_state()
local ends = st.tat
for _, at in ipairs(freed) do
  local last = last_ticket()
  -- no later ticket: the schedule ends at this slot (the later ones are free too)
  if #last == 0 or tonumber(last[2]) <= at then
    ends = math.min(ends, at)
    break
  end
  local moved, was = last[1], tonumber(last[2])
  -- (its job's place in arq's queue moves with it: retime)
  retime(moved, at)
  ends = math.min(ends, was)
end
if ends < st.tat then state_write('tat', fmt(ends)) end
return #freed
