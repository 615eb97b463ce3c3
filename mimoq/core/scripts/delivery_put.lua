-- delivery_put.lua (core/deliveries.py): the prelude of delivery_enqueue.lua and of
-- result_hand_over.lua. Write a callback's delivery record and its arq job together, only
-- when no delivery job with this id is queued or running; due `defer_ms` from Redis's clock.
-- Returns 1 when written, 0 when one was pending.
-- (The job is written with NX, which is also the check: no EXISTS before it.)
local function delivery_put(job_key, queue, record_key, id, job, record, defer_ms, ttl_ms)
  if not redis.call('SET', job_key, job, 'PX', ttl_ms, 'NX') then return 0 end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', record_key, record, 'PX', ttl_ms)
  redis.call('ZADD', queue, now_ms + tonumber(defer_ms), id)
  return 1
end
