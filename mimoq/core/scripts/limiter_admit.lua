-- admit: top up the model's admitted look-ahead from its waiting bulk jobs (the workers'
-- periodic safety net; grants top it up as they happen). ARGV[2]: JSON {want}: the
-- look-ahead to keep, or below zero to admit up to -want jobs untracked (limits off).
-- Returns the number of jobs admitted.

bind(KEYS, ARGV)
local R = cjson.decode(ARGV[2])
local now = now_s()
local want = tonumber(R.want)
local plan = nil
if want >= 0 then
  local st = load_state()
  local f = factor(st, now)
  want = lookahead(spacing(f), st)
  plan = slot_plan(st, f, now)
end
return admit(now, want, plan)
