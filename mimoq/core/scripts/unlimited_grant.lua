-- unlimited_grant.lua (worker/limiter/core.py): limits off, the grant is the job's cancel
-- marker, read and set atomically as limiter_acquire.lua does (docs/cancel.md), and, for an
-- interactive job, its leaving the tenant's admitted set as limiter_acquire.lua's grant does
-- (else enqueue.lua would send the tenant's 17th job on to wait for an admission round).
-- KEYS[1] the marker; KEYS[2] (interactive jobs) the tenant's interactive admitted set.
-- ARGV[1] the marker's TTL in ms; ARGV[2] the job id.
if redis.call('GET', KEYS[1]) == 'cancelled' then return 0 end
redis.call('SET', KEYS[1], 'granted', 'PX', ARGV[1])
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[2]) end
return 1
