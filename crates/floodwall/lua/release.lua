-- floodwall release script: gives back the units one lease holds under `concurrency` policies.
-- Assembled after prelude.lua.
--
-- KEYS[j]    the state key of the lease's j-th concurrency pair. On a cluster all keys share one
--            slot (the caller groups them).
-- ARGV[1]    now_us, as decide.lua
-- ARGV[2j], ARGV[2j+1]   pair j: the member prefix its decision used ("<token>:<i>:") and its
--            cost, so the members are prefix..1 to prefix..cost
-- Reply:     the number of units given back (0 when they had timed out or were given back)
-- Writes:    each key keeps an expiry at its latest timeout, or is deleted once nothing is held.
-- Complexity: O((E + cost) · log M) for M members and E timed-out ones.

local now, min_ttl_ms = clock(ARGV[1])
local released = 0
for j = 1, #KEYS do
  local key, prefix, cost = KEYS[j], ARGV[2 * j], tonumber(ARGV[2 * j + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))
  local members = {}
  for unit = 1, cost do
    members[#members + 1] = prefix .. unit
    -- Bounded argument lists: unpack has a C-stack limit.
    if #members >= 1000 or unit == cost then
      released = released + redis.call('ZREM', key, unpack(members))
      members = {}
    end
  end
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if latest[2] then
    redis.call('PEXPIRE', key, expiry_ms(tonumber(latest[2]) - now, min_ttl_ms))
  else
    redis.call('DEL', key)
  end
end
return released
