-- mimoq usage: add one finished job's usage to the fixed windows it falls in (docs/usage.md,
-- core/usage_windows.py). One call per finished job, pipelined with its result write.
--
-- KEYS: the usage hashes of the job's windows (wire.usage_key), one per window length.
-- ARGV[1]: JSON {"prefix": "<tenant>|<model>|", "ttl": [seconds per key, in KEYS' order],
-- "add": {metric: amount}} (amounts above zero only).
-- One HINCRBYFLOAT per metric and window, nothing more: a tenant's total over its models is
-- summed when read, not written per job. A hash gets its TTL when one of its fields is
-- created, seen from the increment's own reply (the amount itself: the field was absent),
-- so a window's key costs one EXPIRE per new field in its life, not an EXISTS per job.
-- Returns the number of keys written.
local A = cjson.decode(ARGV[1])
for i = 1, #KEYS do
  local new = false
  for metric, amount in pairs(A.add) do
    local now = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], A.prefix .. metric,
      string.format('%.17g', amount)))
    -- the reply is the amount itself only when the field was new (amounts are above zero)
    if math.abs(now - amount) <= amount * 1e-9 then new = true end
  end
  if new then redis.call('EXPIRE', KEYS[i], A.ttl[i]) end
end
return #KEYS
