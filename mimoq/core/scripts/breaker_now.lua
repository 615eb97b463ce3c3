-- breaker_now.lua: the prelude of the breaker's scripts (worker/accounts/breaker.py): `now`.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
