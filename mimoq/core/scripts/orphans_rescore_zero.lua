-- orphans_rescore_zero.lua (worker/orphans.py)
-- KEYS[1] the queue  ARGV: ids scored 0 (re-checked here)
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for i = 1, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == 0 then
    redis.call('ZADD', KEYS[1], now_ms, ARGV[i])
    n = n + 1
  end
end
return n
