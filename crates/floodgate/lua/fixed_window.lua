-- fixed_window: at most `limit` units per window; windows aligned to multiples of the period
-- since the Unix epoch. Mirrors floodgate-core/src/algorithm/fixed_window.rs.
--
-- Key: a string struct.pack('<dd', window_start_us, count). Complexity: O(1).

local fixed_window = {}

function fixed_window.load(key, now, p)
  local current = now - now % p.period
  local raw = redis.call('GET', key)
  local s = { start = current, count = 0, dirty = false }
  if raw then
    local start, count = struct.unpack('<dd', raw)
    if start >= current then
      -- A window in the future (the clock stepped back) counts as the current one.
      s.count = count
      s.dirty = start > current
    end
  end
  return s
end

function fixed_window.remaining(s, now, p)
  return math.max(p.limit - s.count, 0)
end

function fixed_window.wait(s, now, need, p)
  return s.start + p.period - now
end

function fixed_window.consume(s, now, cost, p)
  s.count = s.count + cost
end

function fixed_window.reset_after(s, now, p)
  if s.count == 0 then return 0 end
  return s.start + p.period - now
end

function fixed_window.store(key, s, now, p, ttl_us, min_ttl_ms)
  store_string(key, struct.pack('<dd', s.start, s.count), ttl_us, min_ttl_ms)
end
