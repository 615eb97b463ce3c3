-- mimoq usage: fold a batch of the usage journal (wire.USAGE_JOURNAL_KEY) into its window
-- hashes, exactly once (core/usage_journal.py reads the batch, sums it and calls this).
--
-- KEYS[1]: the journal; KEYS[2..]: the window hashes the batch adds to.
-- ARGV[1]: the batch's length n; ARGV[2] and ARGV[3]: its first and its last entry, as read;
-- ARGV[4]: JSON [[key index (into KEYS), field, amount], ...] (amounts above zero only);
-- ARGV[5]: JSON [TTL seconds of KEYS[2], of KEYS[3], ...].
-- The journal is only ever pushed at its tail and trimmed at its head (by this script), and
-- every entry holds a nonce: the batch is still its first n entries exactly when its first
-- and its n-th are where they were read. Otherwise another worker folded it first, and
-- nothing is written (returns 0). A hash gets its TTL when one of its fields is created,
-- seen from the increment's own reply (as usage_add.lua does).
-- Returns n when the batch was folded, else 0.
local n = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] or redis.call('LINDEX', KEYS[1], n - 1) ~= ARGV[3] then
  return 0
end
local ttl = cjson.decode(ARGV[5])
local new = {}
for _, add in ipairs(cjson.decode(ARGV[4])) do
  local i, amount = add[1], add[3]
  local now = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], add[2], string.format('%.17g', amount)))
  -- the reply is the amount itself only when the field was new (amounts are above zero)
  if math.abs(now - amount) <= amount * 1e-9 then new[i] = true end
end
for i in pairs(new) do redis.call('EXPIRE', KEYS[i], ttl[i - 1]) end
redis.call('LTRIM', KEYS[1], n, -1)
return n
