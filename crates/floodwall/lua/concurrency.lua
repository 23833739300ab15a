-- concurrency: at most `limit` units in flight; a unit goes back when its holder releases it
-- (release.lua) or when the lease timeout `period` has passed. Mirrors
-- floodwall-core/src/algorithm/concurrency.rs.
--
-- Key: a sorted set with one member per unit in flight: score = when it times out (µs), member =
-- "<call token>:<policy index>:<unit>". A lease's call token is its id, so its release removes
-- exactly its members, and a second release removes nothing.
-- Complexity: O(log M + E + cost) for M members and E timed-out ones.
-- State: a = units in flight, b = the latest timeout (nil when nothing is held).

local function fmt(n)
  return string.format('%d', n)
end

local function load(key, now, limit, period, capacity)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if not latest[2] then return 0, nil, false end
  local at, dirty = tonumber(latest[2]), false
  if at > now + period then
    -- A timeout further away than one period (the clock stepped back) is one period from now.
    local bound = now + period
    local future = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(bound), '+inf')
    for _, m in ipairs(future) do
      redis.call('ZADD', key, fmt(bound), m)
    end
    at, dirty = bound, true
  end
  return redis.call('ZCARD', key), at, dirty
end

local function remaining(a, b, now, limit, period, capacity)
  return math.max(limit - a, 0)
end

local function wait(key, a, b, now, need, limit, period, capacity)
  -- The soonest units must time out until `need` fit.
  local index = a + need - limit - 1
  local entry = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  if entry[2] then return tonumber(entry[2]) - now end
  return period
end

local function consume(key, a, b, now, cost, limit, period, member)
  local args, at = {}, fmt(now + period)
  for unit = 1, cost do
    args[#args + 1] = at
    args[#args + 1] = member .. unit
    -- Bounded argument lists: unpack has a C-stack limit.
    if #args >= 1000 or unit == cost then
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  return a + cost, math.max(b or 0, now + period)
end

-- The latest units are the ones a refund gives back: they are what was just admitted.
local function refund(key, a, b, now, cost, limit, period, capacity)
  if a == 0 then return 0, nil end
  redis.call('ZPOPMAX', key, math.min(cost, a))
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if not latest[2] then return 0, nil end
  return math.max(a - cost, 0), tonumber(latest[2])
end

local function reset_after(a, b, now, limit, period, capacity)
  if b then return b - now end
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
