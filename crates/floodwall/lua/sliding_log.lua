-- sliding_log: exact; at most `limit` units in any interval of length `period` ending now. An
-- admitted unit at time t counts while now < t + period. Mirrors
-- floodwall-core/src/algorithm/sliding_log.rs.
--
-- Key: a sorted set with one member per admitted unit: score = admission time (µs), member =
-- "<call token>:<policy index>:<unit>", unique per unit so same-instant admissions never collide.
-- Complexity: O(log M + E + cost) for M members and E expired ones.
-- State: a = units in the log, b = the newest admission time (nil when the log is empty).

local function fmt(n)
  return string.format('%d', n)
end

local function load(key, now, limit, period, capacity)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - period))
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if not newest[2] then return 0, nil, false end
  local at, dirty = tonumber(newest[2]), false
  if at > now then
    -- Entries in the future (the clock stepped back) count as admitted now.
    local future = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf')
    for _, m in ipairs(future) do
      redis.call('ZADD', key, fmt(now), m)
    end
    at, dirty = now, true
  end
  return redis.call('ZCARD', key), at, dirty
end

local function remaining(a, b, now, limit, period, capacity)
  return math.max(limit - a, 0)
end

local function wait(key, a, b, now, need, limit, period, capacity)
  -- The oldest units must leave the interval until `need` fit.
  local index = a + need - limit - 1
  local entry = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  if entry[2] then return tonumber(entry[2]) + period - now end
  return period
end

local function consume(key, a, b, now, cost, limit, period, member)
  local args, at = {}, fmt(now)
  for unit = 1, cost do
    args[#args + 1] = at
    args[#args + 1] = member .. unit
    -- Bounded argument lists: unpack has a C-stack limit.
    if #args >= 1000 or unit == cost then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  return a + cost, now
end

-- The newest units are the ones a refund gives back: they are what was just consumed.
local function refund(key, a, b, now, cost, limit, period, capacity)
  if a == 0 then return 0, nil end
  redis.call('ZPOPMAX', key, math.min(cost, a))
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if not newest[2] then return 0, nil end
  return math.max(a - cost, 0), tonumber(newest[2])
end

local function reset_after(a, b, now, limit, period, capacity)
  if b then return b + period - now end
  return 0
end

-- No debt: a charge takes only what is left.
local function debit(key, a, b, now, cost, limit, period, capacity, max_debt, member)
  return charge_what_is_left(consume, key, a, b, now, cost, limit, period, member)
end

local debt = no_debt

local function store(key, a, b, now, period, expiry)
  redis.call('PEXPIRE', key, expiry)
end
