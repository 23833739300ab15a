-- fixed_window: at most `limit` units per window; windows aligned to multiples of the period
-- since the Unix epoch. Mirrors floodwall-core/src/algorithm/fixed_window.rs.
--
-- Key: a string struct.pack('<dd', window_start_us, count). Complexity: O(1).
-- State: a = units counted in the current window; b unused.

local function load(key, now, limit, period, capacity)
  local current = now - now % period
  local raw = redis.call('GET', key)
  if raw then
    local start, count = struct.unpack('<dd', raw)
    -- A window in the future (the clock stepped back) counts as the current one.
    if start >= current then return count, 0, start > current end
  end
  return 0, 0, false
end

local function remaining(a, b, now, limit, period, capacity)
  return math.max(limit - a, 0)
end

local function wait(key, a, b, now, need, limit, period, capacity)
  return period - now % period
end

local function consume(key, a, b, now, cost, limit, period, member)
  return a + cost, b
end

local function refund(key, a, b, now, cost, limit, period, capacity)
  return math.max(a - cost, 0), b
end

local function reset_after(a, b, now, limit, period, capacity)
  if a == 0 then return 0 end
  return period - now % period
end

local function store(key, a, b, now, period, expiry)
  redis.call('SET', key, struct.pack('<dd', now - now % period, a), 'PX', expiry)
end
