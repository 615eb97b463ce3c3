-- run_finish.lua (core/runs.py)
-- KEYS: run, pending, active runs. ARGV: run, job id, status, now.
-- As count_finish (run_end_if_done.lua).
return count_finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
