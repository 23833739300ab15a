-- floodwall: shared helpers for the algorithm modules and the drivers (single.lua, decide.lua).
--
-- Every number is an integer below 2^53, so Lua's doubles hold it exactly; divisions are floored
-- and then corrected, because a double quotient may round across an integer.
-- States are packed with struct.pack('<d…') (doubles, exact for such integers, 8 bytes each), or,
-- for gcra, written in decimal.
--
-- Speed: the script body runs anew on every call, and each function defined in it is a closure
-- built per call. States are therefore passed as plain values (two numbers per policy), never as
-- tables, and the single-policy scripts define only their own algorithm's functions.

local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceil_div(a, b)
  return idiv(a + b - 1, b)
end

-- The expiry of a state at rest `ttl_us` from now, as PX/PEXPIRE milliseconds: rounded up, at
-- least 1, never sooner than `min_ttl_ms` (tests that inject `now_us` let the clock run slower
-- than Redis's).
local function expiry_ms(ttl_us, min_ttl_ms)
  return string.format('%d', math.max(ceil_div(ttl_us, 1000), min_ttl_ms, 1))
end

-- ARGV[1] -> now in µs and the shortest expiry allowed in ms: Redis TIME when empty (production).
local function clock(now_arg)
  if now_arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2]), 0
  end
  return tonumber(now_arg), 3600000
end

-- A charge on an algorithm that carries no debt (a count of units, `a`, that must stay within
-- the limit): it takes only what is left.
local function charge_what_is_left(consume, key, a, b, now, cost, limit, period, member)
  local taken = math.min(cost, math.max(limit - a, 0))
  if taken > 0 then return consume(key, a, b, now, taken, limit, period, member) end
  return a, b
end

-- The debt of an algorithm that carries none.
local function no_debt()
  return 0
end

-- Writes a policy's state after a decision or a refund: with an expiry at the time it is back at
-- rest (`reset` µs from now), or deleted when it already is, so no key is ever left without a TTL.
local function persist(store, key, a, b, now, period, reset, min_ttl_ms)
  if reset > 0 then
    store(key, a, b, now, period, expiry_ms(reset, min_ttl_ms))
  else
    redis.call('DEL', key)
  end
end

-- Finishes one policy's decision after its module's load and remaining: consumes `cost` when
-- `commit` is true and the policy admits, writes the state when it changed, and returns the
-- reply's four items for the policy: admits (1 | 0), remaining, reset_after_us, retry_after_us
-- (-1 when it admits). A cost of 0 judges one unit and consumes nothing.
local function conclude(consume, wait, reset_after, store, debt, key, a, b, dirty, left, now,
                        cost, commit, limit, period, capacity, max_debt, member, min_ttl_ms)
  local need = math.max(cost, 1)
  local admits = need <= left
  local consumed = commit and admits and cost > 0
  if consumed then
    a, b = consume(key, a, b, now, cost, limit, period, member)
    left = left - cost
  end
  local retry = -1
  if not admits then retry = wait(key, a, b, now, need, limit, period, capacity, max_debt) end
  local reset = reset_after(a, b, now, limit, period, capacity, max_debt)
  if consumed or dirty then persist(store, key, a, b, now, period, reset, min_ttl_ms) end
  return admits and 1 or 0, left, reset, retry, debt(a, b, now, limit, period, capacity, max_debt)
end
