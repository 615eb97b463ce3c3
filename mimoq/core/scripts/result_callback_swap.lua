-- result_callback_swap.lua (worker/callback_delivery.py): a result record's new text, its
-- callback field rewritten, set only if the record is still the text it was made from.
-- One call where WATCH, GET, MULTI, SET and EXEC took three round trips; the caller knows
-- the text it read, or the text its own finish wrote.
-- KEYS[1] mimoq:result:<id>   ARGV[1] the record as read   ARGV[2] its new text
-- Returns 1 when set (its TTL kept), 0 when the record changed or is gone.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
