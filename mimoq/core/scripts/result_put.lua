-- result_put.lua (core/results.py): the prelude of result_unless_cancelled.lua and
-- result_hand_over.lua. A finished job's record, written unless its cancel came first
-- (docs/cancel.md): cancel.lua answers "already_finished" when it finds the record and sets
-- the marker otherwise; both are scripts, so a cancel that answered "in_flight" or
-- "stopping" always ends as "cancelled", and a job recorded first is always answered
-- "already_finished". Returns 0: the marker says cancelled, nothing written (the caller
-- records "cancelled"); 1: written and its news published; 2: written, the publish refused
-- (an ACL without the channel).
local function result_put(record_key, marker_key, record, ttl_s, channel, status)
  if redis.call('GET', marker_key) == 'cancelled' then return 0 end
  redis.call('SET', record_key, record, 'EX', ttl_s)
  local sent = redis.pcall('PUBLISH', channel, status)
  if type(sent) == 'table' and sent.err then return 2 end
  return 1
end
