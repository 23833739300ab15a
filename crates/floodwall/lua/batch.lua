-- floodwall batch script: independent single-policy decisions of the algorithm `ALGORITHM`,
-- one after another in one atomic call, so that N decisions pay one call's dispatch and script
-- entry. Each decides exactly as single.lua would alone, in order (a key twice in one batch sees
-- its first decision's write). Assembled after prelude.lua and that algorithm's module.
--
-- KEYS[i]    the state key of decision i.
-- ARGV[1]    now_us, as decide.lua.
-- ARGV[2]    call token, as decide.lua; decision i names its sliding-log members `token:i:`.
-- ARGV[3]    the algorithm, which must be `ALGORITHM`.
-- ARGV[4]    P, how many policies the batch's decisions use: each is sent once, however many
--            decisions use it (a batch's decisions usually share one).
-- ARGV[5+5(j-1)] .. ARGV[9+5(j-1)]   policy j: limit, period_us, capacity, shadow (1 | 0),
--            max_debt.
-- then, from ARGV[5+5P], two per decision i: cost, and j, the policy it is decided by. The
--            caller has checked cost <= capacity.
-- Reply:     { now_us, then for each decision i: allowed (1 | 0), admits (1 | 0), remaining,
--              reset_after_us, retry_after_us (-1 when admitted), debt }
-- Writes and expiries exactly as single.lua, per decision. Complexity: O(N + P).

local policies = tonumber(ARGV[4])
if ARGV[3] ~= ALGORITHM or not policies or #ARGV ~= 4 + 5 * policies + 2 * #KEYS then
  return redis.error_reply('floodwall: this script decides a batch of ' .. ALGORITHM .. ' policies')
end
-- Each policy's numbers, read once.
local limits, periods, capacities, shadows, max_debts = {}, {}, {}, {}, {}
for j = 1, policies do
  local base = 5 + 5 * (j - 1)
  limits[j], periods[j], capacities[j] = tonumber(ARGV[base]), tonumber(ARGV[base + 1]),
    tonumber(ARGV[base + 2])
  shadows[j], max_debts[j] = ARGV[base + 3] == '1', tonumber(ARGV[base + 4])
end
local now, min_ttl_ms = clock(ARGV[1])
local reply = { now }
local first = 5 + 5 * policies
for i = 1, #KEYS do
  local base = first + 2 * (i - 1)
  local key, cost, j = KEYS[i], tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local limit, period, capacity, max_debt = limits[j], periods[j], capacities[j], max_debts[j]
  if not limit then
    return redis.error_reply('floodwall: decision ' .. i .. ' names no policy of the batch')
  end
  local a, b, dirty = load(key, now, limit, period, capacity, max_debt)
  local left = remaining(a, b, now, limit, period, capacity)
  local admits, rest, reset, retry, owed = conclude(consume, wait, reset_after, store, debt, key,
    a, b, dirty, left, now, cost, true, limit, period, capacity, max_debt,
    ARGV[2] .. ':' .. i .. ':', min_ttl_ms)
  reply[#reply + 1] = (admits == 1 or shadows[j]) and 1 or 0
  reply[#reply + 1] = admits
  reply[#reply + 1] = rest
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
  reply[#reply + 1] = owed
end
return reply
