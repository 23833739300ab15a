-- fixed_window: at most `limit` units per window. `period` > 0: windows aligned to multiples of
-- it since the Unix epoch; -12..-1: that many calendar months from the first of a month; below
-- -12: weeks of -period µs from Monday; all UTC. Mirrors floodwall-core/src/algorithm/
-- fixed_window.rs and calendar.rs.
--
-- Key: a string struct.pack('<dd', window_start_us, count). Complexity: O(1).
-- State: a = units counted in the current window, past the limit by at most max_debt in debt (the
-- next window starts with that excess counted); b unused.

local DAY, FIRST_MONDAY = 86400000000, 345600000000

-- Days from 1970-01-01 to the first of `month` (1-12) of `year`, counting years from March.
local function month_start_day(year, month)
  local march_based = month - 3
  if month <= 2 then
    year, march_based = year - 1, month + 9
  end
  local era = idiv(year, 400)
  local year_of_era = year - era * 400
  local day_of_era = year_of_era * 365 + idiv(year_of_era, 4) - idiv(year_of_era, 100)
    + idiv(153 * march_based + 2, 5)
  return era * 146097 + day_of_era - 719468
end

-- [start, end) of the window holding `now`.
local function window(now, period)
  if period < -12 then
    period = -period
    -- The first Monday is four days in, under any period of whole weeks.
    local into = (now + period - FIRST_MONDAY) % period
    return math.max(now - into, 0), now + period - into
  end
  if period < 0 then
    local shifted = idiv(now, DAY) + 719468
    local era = idiv(shifted, 146097)
    local doe = shifted - era * 146097
    local yoe = idiv(doe - idiv(doe, 1460) + idiv(doe, 36524) - idiv(doe, 146096), 365)
    local march_based = idiv(5 * (doe - (365 * yoe + idiv(yoe, 4) - idiv(yoe, 100))) + 2, 153)
    local month = march_based < 10 and march_based + 3 or march_based - 9
    local year = era * 400 + yoe + (month <= 2 and 1 or 0)
    local index = year * 12 + month - 1
    local first = index - index % -period
    local next = first - period
    return month_start_day(idiv(first, 12), first % 12 + 1) * DAY,
      month_start_day(idiv(next, 12), next % 12 + 1) * DAY
  end
  local start = now - now % period
  return start, start + period
end

-- What the next window owes of a window's `count`: its excess over the limit, at most max_debt.
local function carried(count, limit, max_debt)
  return math.min(math.max(count - limit, 0), max_debt)
end

local function load(key, now, limit, period, capacity, max_debt)
  local current = window(now, period)
  local raw = redis.call('GET', key)
  if raw then
    local start, count = struct.unpack('<dd', raw)
    -- A window in the future (the clock stepped back) counts as the current one.
    if start >= current then return count, 0, start > current end
    -- The window just before passes on its debt.
    if start == window(current - 1, period) then return carried(count, limit, max_debt), 0, false end
  end
  return 0, 0, false
end

local function remaining(a, b, now, limit, period, capacity)
  return math.max(limit - a, 0)
end

-- The next window starts with the debt carried (at most max_debt <= limit), the one after empty.
local function wait(key, a, b, now, need, limit, period, capacity, max_debt)
  local _, finish = window(now, period)
  if carried(a, limit, max_debt) + need <= limit then return finish - now end
  local _, after = window(finish, period)
  return after - now
end

local function consume(key, a, b, now, cost, limit, period, member)
  return a + cost, b
end

local function refund(key, a, b, now, cost, limit, period, capacity)
  return math.max(a - cost, 0), b
end

-- Up to the limit and the most a key may owe; a count already past that (a lowered limit) stays.
local function debit(key, a, b, now, cost, limit, period, capacity, max_debt)
  return math.max(a, math.min(a + cost, limit + max_debt)), b
end

local function debt(a, b, now, limit, period, capacity, max_debt)
  return carried(a, limit, max_debt)
end

local function reset_after(a, b, now, limit, period, capacity, max_debt)
  if a == 0 then return 0 end
  local _, finish = window(now, period)
  if carried(a, limit, max_debt) > 0 then
    local _, after = window(finish, period)
    return after - now
  end
  return finish - now
end

local function store(key, a, b, now, period, expiry)
  redis.call('SET', key, struct.pack('<dd', (window(now, period)), a), 'PX', expiry)
end
