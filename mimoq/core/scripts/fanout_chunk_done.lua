-- A chunk job of a long job has its result (core/results.py queues this right after the
-- result write, on the same pipeline): count it for its parent, and once every chunk of
-- the plan is counted, make the parent due now (worker/fanout.py). The parent stitches as
-- soon as its last chunk is done instead of looking every half second while they run
-- (a look cost a pick and about 19 commands: issue #22).
-- KEYS[1] mimoq:fanout-wake:<parent>: a hash of "total" (the plan's chunk count, written
-- by the parent when it plans) and one field per chunk counted
-- KEYS[2] the queue
-- ARGV[1] the chunk's job id   ARGV[2] its index in the plan   ARGV[3] the parent's job id
-- Idempotent: a chunk run twice (at-least-once) is counted once. A chunk the plan does not
-- have (an index past its total) is not counted. Returns 1 when the parent was woken, else
-- 0 (no plan counted here, chunks still running, or the parent not queued).
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local index = tonumber(ARGV[2])
if not total or not index or index < 0 or index >= total then return 0 end
if redis.call('HSET', KEYS[1], ARGV[1], 1) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) - 1 < total then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- XX: a parent not in the queue (finished, cancelled) is not put back; LT: never later
return redis.call('ZADD', KEYS[2], 'XX', 'LT', 'CH', now_ms, ARGV[3])
