-- sliding_window: admitted iff previous * (period - elapsed) <= (limit - current - cost) * period.
-- Mirrors floodwall-core/src/algorithm/sliding_window.rs.
--
-- Key: a string struct.pack('<ddd', window_start_us, previous, current). Complexity: O(1).
-- State: a = units in the previous window, b = units in the current one (which starts at
-- now - now % period). In debt, b passes the limit by at most max_debt; when the window rolls,
-- that excess stays counted in the new current window and only the rest becomes the previous one.

-- What the next window owes of a window's `count`: its excess over the limit, at most max_debt.
local function carried(count, limit, max_debt)
  return math.min(math.max(count - limit, 0), max_debt)
end

local function load(key, now, limit, period, capacity, max_debt)
  local current = now - now % period
  local raw = redis.call('GET', key)
  if raw then
    local start, previous, count = struct.unpack('<ddd', raw)
    -- The stored windows count as the current ones (a clock that stepped back).
    if start >= current then return previous, count, start > current end
    local owed = carried(count, limit, max_debt)
    if start + period == current then return count - owed, owed, false end
    -- The window between counted only its debt, which it carries no further.
    if start + 2 * period == current then return owed, 0, false end
  end
  return 0, 0, false
end

-- ceil(previous * (period - elapsed) / period); a product past 2^52 exceeds any limit * period,
-- so the exact value no longer matters and `limit` saturates the remaining count just the same.
local function weighted_previous(previous, elapsed, limit, period)
  local w = previous * (period - elapsed)
  if w >= 4503599627370496 then return limit end
  return ceil_div(w, period)
end

-- The smallest elapsed in [0, period) with count * (period - elapsed) <= budget * period, or period.
local function first_elapsed_within(count, budget, period)
  if count == 0 then return 0 end
  return period - math.min(idiv(budget * period, count), period)
end

local function remaining(a, b, now, limit, period, capacity)
  return math.max(limit - b - weighted_previous(a, now % period, limit, period), 0)
end

local function wait(key, a, b, now, need, limit, period, capacity, max_debt)
  local elapsed = now % period
  if b + need <= limit then
    local e = first_elapsed_within(a, limit - b - need, period)
    if e < period then return math.max(e - elapsed, 0) end
  end
  -- Next window: today's count less its debt decays as the previous one, the debt stays counted.
  local owed = carried(b, limit, max_debt)
  if owed + need <= limit then
    local e = first_elapsed_within(b - owed, limit - owed - need, period)
    if e < period then return math.max(period + e - elapsed, 0) end
  end
  -- The window after, where the debt is the decaying previous count.
  local e = first_elapsed_within(owed, limit - need, period)
  if e < period then return math.max(2 * period + e - elapsed, 0) end
  return 3 * period - elapsed
end

local function consume(key, a, b, now, cost, limit, period, member)
  return a, b + cost
end

-- Units consumed before the window rolled now sit in the previous count.
local function refund(key, a, b, now, cost, limit, period, capacity)
  local from_current = math.min(cost, b)
  return math.max(a - (cost - from_current), 0), b - from_current
end

-- Up to the limit and the most a key may owe; a count already past that (a lowered limit) stays.
local function debit(key, a, b, now, cost, limit, period, capacity, max_debt)
  return a, math.max(b, math.min(b + cost, limit + max_debt))
end

local function debt(a, b, now, limit, period, capacity, max_debt)
  return carried(b, limit, max_debt)
end

local function reset_after(a, b, now, limit, period, capacity, max_debt)
  if carried(b, limit, max_debt) > 0 then return 3 * period - now % period end
  if b > 0 then return 2 * period - now % period end
  if a > 0 then return period - now % period end
  return 0
end

local function store(key, a, b, now, period, expiry)
  redis.call('SET', key, struct.pack('<ddd', now - now % period, a, b), 'PX', expiry)
end
