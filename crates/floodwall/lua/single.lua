-- floodwall single-policy decision script: one request of `cost` units for one client under one
-- policy of the algorithm `ALGORITHM`. Assembled after prelude.lua and that algorithm's module
-- (which defines load, remaining, wait, consume, reset_after and store); one script per
-- algorithm, so a call builds no other algorithm's functions.
--
-- KEYS and ARGV exactly as decide.lua with one policy, whose algorithm must be `ALGORITHM`.
-- Reply, writes and expiries exactly as decide.lua. Complexity: O(1), or the sliding log's cost.

if #KEYS ~= 1 or ARGV[4] ~= ALGORITHM then
  return redis.error_reply('floodwall: this script decides one ' .. ALGORITHM .. ' policy')
end
local now, min_ttl_ms = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local need = math.max(cost, 1)
local key = KEYS[1]
local limit, period, capacity = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local a, b, dirty = load(key, now, limit, period, capacity)
local left = remaining(a, b, now, limit, period, capacity)
local admits = need <= left
local consumed = admits and cost > 0
if consumed then
  a, b = consume(key, a, b, now, cost, limit, period, ARGV[3] .. ':1:')
  left = left - cost
end
local retry = -1
if not admits then retry = wait(key, a, b, now, need, limit, period, capacity) end
local reset = reset_after(a, b, now, limit, period, capacity)
if consumed or dirty then
  if reset > 0 then
    store(key, a, b, now, period, expiry_ms(reset, min_ttl_ms))
  else
    redis.call('DEL', key)
  end
end
local allowed = (admits or ARGV[8] == '1') and 1 or 0
return { now, allowed, admits and 1 or 0, left, reset, retry }
