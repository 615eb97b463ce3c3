-- orphans_forget.lua (worker/orphans.py)
-- Compare-and-delete: drop an entry only while it still names this worker.
-- KEYS[1] mimoq:inflight  ARGV[1] worker id, ARGV[2..] job ids
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
