-- release_ticket: a job that makes no MiMo call of its own (a long job's parent: its chunks
-- make the calls, worker/fanout.py) gives back the ticket its admission gave it. The freed
-- slot goes to the schedule's last ticket, its job brought forward in the queue with it
-- (as cancel.lua gives a cancelled job's slot back), and the schedule ends where that
-- ticket was: the slot does not pass unused, and the job's queue place no longer follows a
-- ticket (a re-plan moved it, and a parent moved early only looks at its chunks again).
-- ARGV[2]: JSON {job}. Returns 1 when the job held a ticket here, else 0. O(1).

bind(KEYS, ARGV)
local A = cjson.decode(ARGV[2])
local job_id = A.job
local at, bulk = ticket_of(job_id)
if not at then return 0 end
drop_ticket(job_id, bulk)
local ends = at
local last = last_ticket()
if #last > 0 and tonumber(last[2]) > at then
  retime(last[1], at)
  ends = tonumber(last[2])
end
local st = load_state()
if st.tat > ends then state_write('tat', fmt(ends)) end
return 1
