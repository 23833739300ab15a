-- gcra: the theoretical arrival time TAT = tat + frac / limit microseconds (0 <= frac < limit);
-- admitted iff (max(TAT, now) - now) * limit + cost * period <= burst * period. Mirrors
-- floodgate-core/src/algorithm/gcra.rs.
--
-- Key: a string struct.pack('<dd', tat_us, tat_frac). Complexity: O(1).

local gcra = {}

function gcra.load(key, now, p)
  local s = { tat = now, frac = 0, dirty = false }
  local raw = redis.call('GET', key)
  if raw then
    local tat, frac = struct.unpack('<dd', raw)
    frac = math.min(frac, p.limit - 1)
    if tat > now or (tat == now and frac > 0) then
      s.tat, s.frac = tat, frac
      -- A TAT further ahead than a full burst (the clock stepped back) is clamped to an empty
      -- bucket now. Whole microseconds are compared first, so no product passes 2^53.
      local max = p.capacity * p.period
      local ahead, whole = tat - now, idiv(max, p.limit)
      if ahead > whole or (ahead == whole and ahead * p.limit + frac > max) then
        s.tat, s.frac, s.dirty = now + whole, max - whole * p.limit, true
      end
    end
  end
  return s
end

function gcra.remaining(s, now, p)
  local debt = (s.tat - now) * p.limit + s.frac
  return idiv(p.capacity * p.period - debt, p.period)
end

function gcra.wait(s, now, need, p)
  local slack = p.capacity * p.period - need * p.period - s.frac
  local at
  if slack >= 0 then
    at = math.max(s.tat - idiv(slack, p.limit), 0)
  else
    at = s.tat + 1
  end
  return math.max(at - now, 0)
end

function gcra.consume(s, now, cost, p)
  local scaled = s.frac + cost * p.period
  local whole = idiv(scaled, p.limit)
  s.tat = s.tat + whole
  s.frac = scaled - whole * p.limit
end

function gcra.reset_after(s, now, p)
  if s.frac > 0 then return s.tat + 1 - now end
  return s.tat - now
end

function gcra.store(key, s, now, p, ttl_us, min_ttl_ms)
  store_string(key, struct.pack('<dd', s.tat, s.frac), ttl_us, min_ttl_ms)
end
