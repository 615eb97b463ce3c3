-- The result record of a job of no run that has a callback, written unless its cancel came
-- first (result_put.lua), and, when written, its callback handed over to its delivery job
-- (delivery_put.lua) in the same call: the two took a round trip each (issue #22). Refused,
-- it hands nothing over: the job's cancelled record hands its own callback over.
-- KEYS[1] mimoq:result:<id>, KEYS[2] its cancel marker, KEYS[3] arq:job:<delivery id>,
-- KEYS[4] the queue, KEYS[5] mimoq:delivery:<delivery id>.
-- ARGV[1..4] as result_unless_cancelled.lua's; ARGV[5..9] as delivery_enqueue.lua's.
-- Returns {written, queued}: written as result_put's; queued 1 when the delivery was
-- written, 0 when nothing was written or a delivery job with its id was pending.
local written = result_put(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
if written == 0 then return {0, 0} end
return {written, delivery_put(KEYS[3], KEYS[4], KEYS[5], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])}
