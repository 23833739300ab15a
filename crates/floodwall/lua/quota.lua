-- floodwall quota script: one proxy's report on a (policy, key) whose rate proxies share, and the
-- share granted to it; the twin of floodwall-core's `quota::Quota::report`, line for line.
-- Assembled after prelude.lua.
--
-- KEYS[1]    the quota's hash: one field per reporter, its id as 16 hex digits (so that the
--            fields sort as the ids do), its value "demand:per_period:max:expires_us"
-- ARGV[1]    now_us, as decide.lua
-- ARGV[2]    the reporter's id, 16 hex digits
-- ARGV[3]    its demand, requests per period (computed by the caller, at most the limit)
-- ARGV[4..8] limit, burst, ttl_us, max_reporters
-- Reply:     { per_period, max, expires_us } (all 0 for a reporter past max_reporters)
-- Writes:    the reporter's field; expired fields removed; the key expires with its last share.
-- Complexity: O(R log R) for R reporters (at most max_reporters).

local now, min_ttl_ms = clock(ARGV[1])
local key, id, demand = KEYS[1], ARGV[2], tonumber(ARGV[3])
local limit, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local ttl, max_reporters = tonumber(ARGV[6]), tonumber(ARGV[7])

-- The reporters whose shares have not expired, by id.
local ids, wants, rates, maxes, expiries = {}, {}, {}, {}, {}
local flat = redis.call('HGETALL', key)
local known = false
local stale = {}
for f = 1, #flat, 2 do
  local d, r, m, e = string.match(flat[f + 1], '^(%d+):(%d+):(%d+):(%d+)$')
  e = tonumber(e)
  if e and e > now then
    local i = #ids + 1
    ids[i], wants[i], rates[i], maxes[i], expiries[i] =
      flat[f], tonumber(d), tonumber(r), tonumber(m), e
    if flat[f] == id then known = true end
  else
    stale[#stale + 1] = flat[f]
  end
end
if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
if not known then
  if #ids >= max_reporters then return { 0, 0, 0 } end
  local i = #ids + 1
  ids[i], wants[i], rates[i], maxes[i], expiries[i] = id, demand, 0, 0, now
end
-- In id order, as the Rust side keeps them.
local order = {}
for i = 1, #ids do order[i] = i end
table.sort(order, function(a, b) return ids[a] < ids[b] end)
local sorted_ids, demands, held_rates, held_maxes = {}, {}, {}, {}
local at
for k, i in ipairs(order) do
  sorted_ids[k], demands[k], held_rates[k], held_maxes[k] = ids[i], wants[i], rates[i], maxes[i]
  if ids[i] == id then at = k end
end
demands[at] = demand

-- Targets: max-min fair over wants (each at least the floor), then the surplus evenly.
local n = #sorted_ids
local pool = limit - idiv(limit, 8)
local floor = idiv(pool, 4 * n)
local want = {}
for k = 1, n do want[k] = math.max(demands[k], floor) end
local by_want = {}
for k = 1, n do by_want[k] = k end
table.sort(by_want, function(a, b)
  if want[a] ~= want[b] then return want[a] < want[b] end
  return a < b
end)
local alloc = {}
for k = 1, n do alloc[k] = 0 end
local remaining, left, met = pool, n, 0
for _, k in ipairs(by_want) do
  if want[k] > idiv(remaining, left) then break end
  alloc[k] = want[k]
  remaining = remaining - want[k]
  left = left - 1
  met = met + 1
end
local among = {}
if met < n then
  for j = met + 1, n do among[#among + 1] = by_want[j] end
else
  for k = 1, n do among[k] = k end
end
table.sort(among)
local each, extra = idiv(remaining, #among), remaining % #among
for j, k in ipairs(among) do
  alloc[k] = alloc[k] + each + ((j <= extra) and 1 or 0)
end

-- Granted: the target, less what the others hold now.
local others_rate, others_max = 0, 0
for k = 1, n do
  if k ~= at then
    others_rate = others_rate + held_rates[k]
    others_max = others_max + held_maxes[k]
  end
end
local per_period = math.min(alloc[at], math.max(limit - others_rate, 0))
local max = 0
if per_period > 0 then
  max = math.min(math.max(idiv(burst * per_period, limit), 1), math.max(burst - others_max, 0))
end
if max == 0 then per_period = 0 end
local expires = now + ttl
redis.call('HSET', key, id, string.format('%d:%d:%d:%d', demand, per_period, max, expires))
-- The key lives as long as its latest share.
local latest = expires
for k = 1, n do
  if k ~= at and expiries[order[k]] > latest then latest = expiries[order[k]] end
end
redis.call('PEXPIRE', key, expiry_ms(latest - now, min_ttl_ms))
return { per_period, max, expires }
