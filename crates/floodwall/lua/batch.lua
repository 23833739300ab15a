-- floodwall batch script: independent single-policy decisions of the algorithm `ALGORITHM`,
-- one after another in one atomic call, so that N decisions pay one call's dispatch and script
-- entry. Each decides exactly as single.lua would alone, in order (a key twice in one batch sees
-- its first decision's write). Assembled after prelude.lua and that algorithm's module.
--
-- KEYS[i]    the state key of decision i.
-- ARGV[1]    now_us, as decide.lua.
-- ARGV[2]    call token, as decide.lua; decision i names its sliding-log members `token:i:`.
-- ARGV[3]    the algorithm, which must be `ALGORITHM`.
-- ARGV[4+6(i-1)] .. ARGV[9+6(i-1)]   decision i: cost, limit, period_us, capacity, shadow
--            (1 | 0), max_debt. The caller has checked cost <= capacity.
-- Reply:     { now_us, then for each decision i: allowed (1 | 0), admits (1 | 0), remaining,
--              reset_after_us, retry_after_us (-1 when admitted), debt }
-- Writes and expiries exactly as single.lua, per decision. Complexity: O(N).

if ARGV[3] ~= ALGORITHM or #ARGV ~= 3 + 6 * #KEYS then
  return redis.error_reply('floodwall: this script decides a batch of ' .. ALGORITHM .. ' policies')
end
local now, min_ttl_ms = clock(ARGV[1])
local reply = { now }
for i = 1, #KEYS do
  local base = 4 + 6 * (i - 1)
  local key, cost = KEYS[i], tonumber(ARGV[base])
  local limit, period, capacity = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
    tonumber(ARGV[base + 3])
  local max_debt = tonumber(ARGV[base + 5])
  local a, b, dirty = load(key, now, limit, period, capacity, max_debt)
  local left = remaining(a, b, now, limit, period, capacity)
  local admits, rest, reset, retry, owed = conclude(consume, wait, reset_after, store, debt, key,
    a, b, dirty, left, now, cost, true, limit, period, capacity, max_debt,
    ARGV[2] .. ':' .. i .. ':', min_ttl_ms)
  reply[#reply + 1] = (admits == 1 or ARGV[base + 4] == '1') and 1 or 0
  reply[#reply + 1] = admits
  reply[#reply + 1] = rest
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
  reply[#reply + 1] = owed
end
return reply
