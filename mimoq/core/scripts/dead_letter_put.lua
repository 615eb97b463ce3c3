-- dead_letter_put.lua (core/deadletters.py)
-- KEYS[1] the record  KEYS[2] the index
-- ARGV: delivery id, record JSON, dead_at, ttl s, record prefix, cutoff (drop older), batch
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6], 'LIMIT', 0, ARGV[7])
for _, id in ipairs(old) do
  redis.call('DEL', ARGV[5] .. id)
  redis.call('ZREM', KEYS[2], id)
end
local ttl = tonumber(ARGV[4])
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return #old
