-- gcra: the theoretical arrival time TAT = tat + frac / limit microseconds (0 <= frac < limit);
-- admitted iff (max(TAT, now) - now) * limit + cost * period <= burst * period. Mirrors
-- floodwall-core/src/algorithm/gcra.rs.
--
-- Key: a string, the decimal tat when frac is 0 (whenever limit divides the period in µs, as in
-- 10/minute), which Redis keeps as an integer in the key's own object at no extra allocation;
-- otherwise 'tat:frac'. Complexity: O(1).
-- State: a = tat, b = frac, with TAT never earlier than now. A key in debt has its TAT past a
-- full burst, by at most `max_debt` emission intervals more.

local function load(key, now, limit, period, capacity, max_debt)
  local raw = redis.call('GET', key)
  if not raw then return now, 0, false end
  local tat, frac = tonumber(raw), 0
  if not tat then
    local colon = string.find(raw, ':', 1, true)
    if not colon then return now, 0, false end
    tat, frac = tonumber(string.sub(raw, 1, colon - 1)), tonumber(string.sub(raw, colon + 1))
    if not tat or not frac then return now, 0, false end
    frac = math.min(frac, limit - 1)
  end
  if tat < now or (tat == now and frac == 0) then return now, 0, false end
  -- A TAT further ahead than a full burst and the most a key may owe (the clock stepped back) is
  -- clamped to that. Whole microseconds are compared first, so no product passes 2^53.
  local max = (capacity + max_debt) * period
  local ahead, whole = tat - now, idiv(max, limit)
  if ahead > whole or (ahead == whole and ahead * limit + frac > max) then
    return now + whole, max - whole * limit, true
  end
  return tat, frac, false
end

local function remaining(a, b, now, limit, period, capacity)
  return math.max(idiv(capacity * period - (a - now) * limit - b, period), 0)
end

local function wait(key, a, b, now, need, limit, period, capacity)
  local slack = capacity * period - need * period - b
  local at
  if slack >= 0 then
    at = math.max(a - idiv(slack, limit), 0)
  else
    at = a + 1
  end
  return math.max(at - now, 0)
end

local function consume(key, a, b, now, cost, limit, period, member)
  local scaled = b + cost * period
  local whole = idiv(scaled, limit)
  return a + whole, scaled - whole * limit
end

-- The TAT moves back by `cost` emission intervals, never before now (rest).
local function refund(key, a, b, now, cost, limit, period, capacity)
  local debt = math.max((a - now) * limit + b - cost * period, 0)
  local whole = idiv(debt, limit)
  return now + whole, debt - whole * limit
end

-- The TAT moves on by `cost` emission intervals, up to a full burst and the most a key may owe.
-- A sum past 2^53 is past that ceiling too, and rounding keeps it there.
local function debit(key, a, b, now, cost, limit, period, capacity, max_debt)
  local backlog = math.min((a - now) * limit + b + cost * period, (capacity + max_debt) * period)
  local whole = idiv(backlog, limit)
  return now + whole, backlog - whole * limit
end

-- Units owed past a full burst, rounded up.
local function debt(a, b, now, limit, period, capacity, max_debt)
  return math.max(ceil_div((a - now) * limit + b - capacity * period, period), 0)
end

local function reset_after(a, b, now, limit, period, capacity)
  if b > 0 then return a + 1 - now end
  return a - now
end

local function store(key, a, b, now, period, expiry)
  local value
  if b == 0 then
    value = string.format('%d', a)
  else
    value = string.format('%d:%d', a, b)
  end
  redis.call('SET', key, value, 'PX', expiry)
end
