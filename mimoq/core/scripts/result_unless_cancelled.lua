-- The result record of a job a worker ran (succeeded or failed), written unless its cancel
-- came first (docs/cancel.md, core/results.py write_result_unless_cancelled).
-- KEYS[1] mimoq:result:<id>, KEYS[2] its cancel marker mimoq:cancel:<id>.
-- ARGV[1] the record (JSON), ARGV[2] its TTL in seconds, ARGV[3] the job's done channel,
-- ARGV[4] its status (the news published there).
-- Returns 0: the marker says cancelled, nothing written (the caller records "cancelled");
-- 1: written and published; 2: written, the publish refused (an ACL without the channel).
-- cancel.lua answers "already_finished" when it finds the record and sets the marker
-- otherwise; both are scripts, so a cancel that answered "in_flight" or "stopping" always
-- ends as "cancelled", and a job recorded first is always answered "already_finished".
if redis.call('GET', KEYS[2]) == 'cancelled' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local sent = redis.pcall('PUBLISH', ARGV[3], ARGV[4])
if type(sent) == 'table' and sent.err then return 2 end
return 1
