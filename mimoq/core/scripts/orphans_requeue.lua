-- orphans_requeue.lua (worker/orphans.py)
-- Hand one dead worker's job back, if everything still says it should be.
-- KEYS[1] mimoq:inflight  KEYS[2] the owner's heartbeat  KEYS[3] arq:in-progress:<id>
-- KEYS[4] arq:job:<id>  KEYS[5] the queue
-- ARGV[1] job id  ARGV[2] owner  ARGV[3] PTTL (ms) below which the owner counts as dead
-- Returns 1 re-queued, 2 nothing to run (finished or expired), 0 not ours to touch.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
local ttl = redis.call('PTTL', KEYS[2])
if ttl == -1 or ttl >= tonumber(ARGV[3]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 0 then return 2 end
redis.call('DEL', KEYS[3])
local score = redis.call('ZSCORE', KEYS[5], ARGV[1])
if not score or tonumber(score) == 0 then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[5], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
end
return 1
