-- floodwall adjustment scripts: `ADJUSTMENT` (set before this file) is 'refund' or 'debit', for
-- `cost` units under N (policy, key) pairs. Assembled like decide.lua.
--
-- refund: gives the units back, as if an admission of `cost` had not happened, never past a
--         full quota.
-- debit:  charges them whatever is left (a cost known only after the answer): past zero a key
--         owes the rest, up to its policy's max_debt, and what would go past that is forgiven;
--         an algorithm without debt takes only what is left.
--
-- KEYS and ARGV exactly as decide.lua, per-pair costs too; a debit's cost may exceed the
-- capacity. ARGV[3], the call token, names the units a debit takes on a sliding log or
-- concurrency pair.
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
  if ADJUSTMENT == 'debit' then
    a, b = m.debit(key, a, b, now, cost_at(i, cost), limit, period, capacity, max_debt,
      ARGV[3] .. ':' .. i .. ':')
  else
    a, b = m.refund(key, a, b, now, cost_at(i, cost), limit, period, capacity)
  end
  local reset = m.reset_after(a, b, now, limit, period, capacity, max_debt)
  persist(m.store, key, a, b, now, period, reset, min_ttl_ms)
  reply[#reply + 1] = 1
  reply[#reply + 1] = m.remaining(a, b, now, limit, period, capacity)
  reply[#reply + 1] = reset
  reply[#reply + 1] = -1
  reply[#reply + 1] = m.debt(a, b, now, limit, period, capacity, max_debt)
end
return reply
