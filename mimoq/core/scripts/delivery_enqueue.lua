-- delivery_enqueue.lua (core/deliveries.py)
-- Atomic: the record and the arq job are written together, and only when no delivery job
-- with this id is queued or running.
-- KEYS[1] arq:job:<id>  KEYS[2] the queue  KEYS[3] mimoq:delivery:<id>
-- ARGV: id, arq job, delivery JSON, defer ms, ttl ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[5])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[4]), ARGV[1])
return 1
