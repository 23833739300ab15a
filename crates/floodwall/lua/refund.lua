-- floodwall refund script: gives back `cost` units under N (policy, key) pairs, as if an
-- admission of `cost` had not happened, never past a full quota. Assembled like decide.lua.
--
-- KEYS and ARGV exactly as decide.lua (ARGV[3], the call token, is unused), per-pair costs too.
-- Reply:     as decide.lua, every policy allowed: { now_us, 1, then for each policy i: 1,
--              remaining, reset_after_us, -1, debt }
-- Writes:    each key, with an expiry at the time its state is back at rest, or deleted when it is.
-- Complexity: O(N) for N policies, plus O(cost · log M) for a sliding log of M members.

local now, min_ttl_ms = clock(ARGV[1])
local cost = tonumber(ARGV[2])

local reply = { now, 1 }
for i = 1, #KEYS do
  local m, limit, period, capacity, _, max_debt = policy_at(i)
  local key = KEYS[i]
  local a, b = m.load(key, now, limit, period, capacity, max_debt)
  a, b = m.refund(key, a, b, now, cost_at(i, cost), limit, period, capacity)
  local reset = m.reset_after(a, b, now, limit, period, capacity, max_debt)
  persist(m.store, key, a, b, now, period, reset, min_ttl_ms)
  reply[#reply + 1] = 1
  reply[#reply + 1] = m.remaining(a, b, now, limit, period, capacity)
  reply[#reply + 1] = reset
  reply[#reply + 1] = -1
  reply[#reply + 1] = m.debt(a, b, now, limit, period, capacity, max_debt)
end
return reply
