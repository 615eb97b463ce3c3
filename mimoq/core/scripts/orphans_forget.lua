-- orphans_forget.lua (worker/orphans.py)
-- Compare-and-delete: drop an entry only while it still names this worker (another worker
-- that re-ran the job owns it now). One HMGET and one HDEL per 500 ids, not an HGET and an
-- HDEL per id: a worker forgets every job it finished since its last beat in one call.
-- KEYS[1] mimoq:inflight  ARGV[1] worker id, ARGV[2..] job ids
local CHUNK = 500
local n = 0
for first = 2, #ARGV, CHUNK do
  local last = math.min(first + CHUNK - 1, #ARGV)
  local owners = redis.call('HMGET', KEYS[1], unpack(ARGV, first, last))
  local mine = {}
  for i = 1, last - first + 1 do
    if owners[i] == ARGV[1] then mine[#mine + 1] = ARGV[first + i - 1] end
  end
  if #mine > 0 then n = n + redis.call('HDEL', KEYS[1], unpack(mine)) end
end
return n
