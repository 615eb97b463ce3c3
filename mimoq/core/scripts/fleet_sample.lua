-- fleet_sample.lua (worker/heartbeat.py): the fleet-wide gauges in one atomic read.
-- KEYS[1] the queue  KEYS[2] mimoq:inflight  KEYS[3] the dead-letter index  ARGV[1] now, ms
local now = tonumber(ARGV[1])
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local deferred = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now then due = due - 1 end
end
-- dead letters within retention: the index may still name expired ones until its next write
return {due, deferred, redis.call('ZCOUNT', KEYS[3], ARGV[2], '+inf')}
