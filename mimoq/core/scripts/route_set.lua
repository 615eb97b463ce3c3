-- route_set.lua (worker/accounts/route_choice.py)
-- Record ARGV[1] as the route unless somebody re-routed since the caller read ARGV[3]
-- ('' = no route): then follow theirs (two chunks re-choosing at once agree on one).
-- KEYS[1] the route key; ARGV[2] its TTL, s
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[3] then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
