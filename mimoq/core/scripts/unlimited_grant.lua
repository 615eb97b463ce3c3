-- unlimited_grant.lua (worker/limiter/core.py): limits off, the grant is only the job's
-- cancel marker, read and set atomically as limiter_acquire.lua does (docs/cancel.md).
-- KEYS[1] the marker; ARGV[1] its TTL in ms.
if redis.call('GET', KEYS[1]) == 'cancelled' then return 0 end
redis.call('SET', KEYS[1], 'granted', 'PX', ARGV[1])
return 1
