-- delivery_enqueue.lua (core/deliveries.py), after the prelude delivery_put.lua.
-- Atomic: the record and the arq job are written together, and only when no delivery job
-- with this id is queued or running.
-- KEYS[1] arq:job:<id>  KEYS[2] the queue  KEYS[3] mimoq:delivery:<id>
-- ARGV: id, arq job, delivery JSON, defer ms, ttl ms
return delivery_put(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
