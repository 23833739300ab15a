-- sliding_log: exact; at most `limit` units in any interval of length `period` ending now. An
-- admitted unit at time t counts while now < t + period. Mirrors
-- floodgate-core/src/algorithm/sliding_log.rs.
--
-- Key: a sorted set with one member per admitted unit: score = admission time (µs), member =
-- "<call token>:<policy index>:<unit>", unique per unit so same-instant admissions never collide.
-- Complexity: O(log M + E + cost) for M members and E expired ones.

local sliding_log = {}

local function fmt(n)
  return string.format('%d', n)
end

function sliding_log.load(key, now, p)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - p.period))
  local s = { key = key, count = 0, newest = nil, dirty = false }
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] then
    local at = tonumber(newest[2])
    if at > now then
      -- Entries in the future (the clock stepped back) count as admitted now.
      local future = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf')
      for _, member in ipairs(future) do
        redis.call('ZADD', key, fmt(now), member)
      end
      at, s.dirty = now, true
    end
    s.newest = at
    s.count = redis.call('ZCARD', key)
  end
  return s
end

function sliding_log.remaining(s, now, p)
  return math.max(p.limit - s.count, 0)
end

function sliding_log.wait(s, now, need, p)
  -- The oldest units must leave the interval until `need` fit.
  local index = s.count + need - p.limit - 1
  local entry = redis.call('ZRANGE', s.key, index, index, 'WITHSCORES')
  if entry[2] then return tonumber(entry[2]) + p.period - now end
  return p.period
end

function sliding_log.consume(s, now, cost, p)
  local args, at, prefix = {}, fmt(now), p.call .. ':' .. p.index .. ':'
  for unit = 1, cost do
    args[#args + 1] = at
    args[#args + 1] = prefix .. unit
    -- Bounded argument lists: unpack has a C-stack limit.
    if #args >= 1000 or unit == cost then
      redis.call('ZADD', s.key, unpack(args))
      args = {}
    end
  end
  s.count, s.newest = s.count + cost, now
end

function sliding_log.reset_after(s, now, p)
  if s.newest then return s.newest + p.period - now end
  return 0
end

function sliding_log.store(key, s, now, p, ttl_us, min_ttl_ms)
  redis.call('PEXPIRE', key, expiry_ms(ttl_us, min_ttl_ms))
end
