-- A parent job found chunks without a result (worker/fanout.py): put its place in the
-- queue at the backstop, when it looks again even if no chunk wakes it; or, when every
-- chunk has been counted (fanout_chunk_done.lua) by now, after the short look instead.
-- Atomic with fanout_chunk_done.lua, so the last chunk's wake is never lost: either it was
-- counted first and this sees it, or it comes after and moves the place forward.
-- KEYS[1] mimoq:fanout-wake:<parent>   KEYS[2] the queue
-- ARGV[1] the parent's job id   ARGV[2] ms to the backstop   ARGV[3] ms to the short look
-- Returns {queued, ms}: queued 1 when the place was set (the worker leaves it where it
-- is), 0 when the parent is not in the queue (its worker defers it by ms itself).
local wait = tonumber(ARGV[2])
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if total and redis.call('HLEN', KEYS[1]) - 1 >= total then wait = tonumber(ARGV[3]) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then return {0, wait} end
redis.call('ZADD', KEYS[2], 'XX', now_ms + wait, ARGV[1])
return {1, wait}
