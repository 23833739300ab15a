-- token_bucket: `burst` tokens refilled at limit / period. Credit is tokens * period_us and grows
-- by `limit` per microsecond, so no fraction is ever rounded. Mirrors
-- floodgate-core/src/algorithm/token_bucket.rs.
--
-- Key: a string struct.pack('<dd', credit, updated_us). Complexity: O(1).

local token_bucket = {}

function token_bucket.load(key, now, p)
  local full = p.capacity * p.period
  local s = { credit = full, dirty = false }
  local raw = redis.call('GET', key)
  if raw then
    local credit, updated = struct.unpack('<dd', raw)
    -- A last update in the future (the clock stepped back) is taken as now.
    local elapsed = math.max(now - updated, 0)
    credit = math.min(credit, full)
    if elapsed >= ceil_div(full - credit, p.limit) then
      s.credit = full
    else
      s.credit = credit + elapsed * p.limit
    end
    s.dirty = updated > now
  end
  return s
end

function token_bucket.remaining(s, now, p)
  return idiv(s.credit, p.period)
end

function token_bucket.wait(s, now, need, p)
  return ceil_div(need * p.period - s.credit, p.limit)
end

function token_bucket.consume(s, now, cost, p)
  s.credit = s.credit - cost * p.period
end

function token_bucket.reset_after(s, now, p)
  return ceil_div(p.capacity * p.period - s.credit, p.limit)
end

function token_bucket.store(key, s, now, p, ttl_us, min_ttl_ms)
  store_string(key, struct.pack('<dd', s.credit, now), ttl_us, min_ttl_ms)
end
