-- token_bucket: `burst` tokens refilled at limit / period. Credit is tokens * period_us and grows
-- by `limit` per microsecond, so no fraction is ever rounded. Mirrors
-- floodwall-core/src/algorithm/token_bucket.rs.
--
-- Key: a string struct.pack('<dd', credit, updated_us). Complexity: O(1).
-- State: a = credit now, below zero by what a key in debt owes (at most max_debt tokens);
-- b unused.

local function load(key, now, limit, period, capacity, max_debt)
  local full = capacity * period
  local raw = redis.call('GET', key)
  if not raw then return full, 0, false end
  local credit, updated = struct.unpack('<dd', raw)
  -- A last update in the future (the clock stepped back) is taken as now.
  local elapsed = math.max(now - updated, 0)
  credit = math.max(math.min(credit, full), -max_debt * period)
  if elapsed >= ceil_div(full - credit, limit) then return full, 0, updated > now end
  return credit + elapsed * limit, 0, updated > now
end

local function remaining(a, b, now, limit, period, capacity)
  return idiv(math.max(a, 0), period)
end

local function wait(key, a, b, now, need, limit, period, capacity)
  return ceil_div(need * period - a, limit)
end

local function consume(key, a, b, now, cost, limit, period, member)
  return a - cost * period, b
end

local function refund(key, a, b, now, cost, limit, period, capacity)
  return math.min(a + cost * period, capacity * period), b
end

local function debit(key, a, b, now, cost, limit, period, capacity, max_debt)
  return math.max(a - cost * period, -max_debt * period), b
end

-- Tokens owed, rounded up.
local function debt(a, b, now, limit, period, capacity, max_debt)
  return ceil_div(math.max(-a, 0), period)
end

local function reset_after(a, b, now, limit, period, capacity)
  return ceil_div(capacity * period - a, limit)
end

local function store(key, a, b, now, period, expiry)
  redis.call('SET', key, struct.pack('<dd', a, now), 'PX', expiry)
end
