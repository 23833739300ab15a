-- floodwall single-policy decision script: one request of `cost` units for one client under one
-- policy of the algorithm `ALGORITHM`. Assembled after prelude.lua and that algorithm's module
-- (which defines load, remaining, wait, consume, refund, debit, debt, reset_after and store); one
-- script per
-- algorithm, so a call builds no other algorithm's functions.
--
-- KEYS and ARGV exactly as decide.lua with one policy, whose algorithm must be `ALGORITHM`.
-- Reply, writes and expiries exactly as decide.lua. Complexity: O(1), or the sliding log's cost.

if #KEYS ~= 1 or ARGV[4] ~= ALGORITHM then
  return redis.error_reply('floodwall: this script decides one ' .. ALGORITHM .. ' policy')
end
local now, min_ttl_ms = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local key = KEYS[1]
local limit, period, capacity = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_debt = tonumber(ARGV[9])

local a, b, dirty = load(key, now, limit, period, capacity, max_debt)
local left = remaining(a, b, now, limit, period, capacity)
-- One policy decides alone: it consumes whenever it admits, shadow or not.
local admits, rest, reset, retry, owed = conclude(consume, wait, reset_after, store, debt, key, a,
  b, dirty, left, now, cost, true, limit, period, capacity, max_debt, ARGV[3] .. ':1:', min_ttl_ms)
local allowed = (admits == 1 or ARGV[8] == '1') and 1 or 0
return { now, allowed, admits, rest, reset, retry, owed }
