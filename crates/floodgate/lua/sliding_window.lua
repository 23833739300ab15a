-- sliding_window: admitted iff previous * (period - elapsed) <= (limit - current - cost) * period.
-- Mirrors floodgate-core/src/algorithm/sliding_window.rs.
--
-- Key: a string struct.pack('<ddd', window_start_us, previous, current). Complexity: O(1).

local sliding_window = {}

function sliding_window.load(key, now, p)
  local current = now - now % p.period
  local s = { start = current, previous = 0, current = 0, dirty = false }
  local raw = redis.call('GET', key)
  if raw then
    local start, previous, count = struct.unpack('<ddd', raw)
    if start >= current then
      -- The stored windows count as the current ones (a clock that stepped back).
      s.previous, s.current, s.dirty = previous, count, start > current
    elseif start + p.period == current then
      s.previous = count
    end
  end
  return s
end

-- ceil(previous * (period - elapsed) / period); a product past 2^52 exceeds any limit * period,
-- so the exact value no longer matters and `limit` saturates the remaining count just the same.
local function weighted_previous(s, now, p)
  local w = s.previous * (p.period - (now - s.start))
  if w >= 4503599627370496 then return p.limit end
  return ceil_div(w, p.period)
end

-- The smallest elapsed in [0, period) with count * (period - elapsed) <= budget * period, or period.
local function first_elapsed_within(count, budget, period)
  if count == 0 then return 0 end
  return period - math.min(idiv(budget * period, count), period)
end

function sliding_window.remaining(s, now, p)
  return math.max(p.limit - s.current - weighted_previous(s, now, p), 0)
end

function sliding_window.wait(s, now, need, p)
  if s.current + need <= p.limit then
    local e = first_elapsed_within(s.previous, p.limit - s.current - need, p.period)
    if e < p.period then return math.max(s.start + e - now, 0) end
  end
  local e = first_elapsed_within(s.current, p.limit - need, p.period)
  if e < p.period then return math.max(s.start + p.period + e - now, 0) end
  return s.start + 2 * p.period - now
end

function sliding_window.consume(s, now, cost, p)
  s.current = s.current + cost
end

function sliding_window.reset_after(s, now, p)
  if s.current > 0 then return s.start + 2 * p.period - now end
  if s.previous > 0 then return s.start + p.period - now end
  return 0
end

function sliding_window.store(key, s, now, p, ttl_us, min_ttl_ms)
  store_string(key, struct.pack('<ddd', s.start, s.previous, s.current), ttl_us, min_ttl_ms)
end
