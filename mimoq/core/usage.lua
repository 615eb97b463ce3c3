-- mimoq usage: add one finished job's usage to the fixed windows it falls in (README,
-- "Usage and tenant limits"). One call per finished job, pipelined with its result write.
--
-- KEYS: the usage hashes of the job's windows (wire.usage_key), one per window length.
-- ARGV[1]: JSON {"model": "<tenant>|<model>|", "total": "<tenant>|*|", "ttl": [seconds per
-- key, in KEYS' order], "add": {metric: amount}} (amounts above zero only).
-- A hash gets its TTL when this script creates it, so each window's key is written with
-- one EXPIRE in its life, not one per job. Returns the number of keys written.
local A = cjson.decode(ARGV[1])
local function fmt(x)
  return string.format('%.17g', x)
end
for i = 1, #KEYS do
  local new = redis.call('EXISTS', KEYS[i]) == 0
  for metric, amount in pairs(A.add) do
    redis.call('HINCRBYFLOAT', KEYS[i], A.model .. metric, fmt(amount))
    redis.call('HINCRBYFLOAT', KEYS[i], A.total .. metric, fmt(amount))
  end
  if new then redis.call('EXPIRE', KEYS[i], A.ttl[i]) end
end
return #KEYS
