-- floodwall decision script: one request of `cost` units under N (policy, key) pairs, decided
-- all-or-nothing in one atomic call. Assembled after prelude.lua, the algorithm modules (each
-- wrapped in a constructor, `<name>_module`) and modules.lua, so a call builds only the modules
-- its policies use.
--
-- KEYS[i]    the state key of pair i. On a cluster all keys share one slot (the caller groups
--            them); on one node they may belong to different clients.
-- ARGV[1]    now_us: empty to read Redis TIME (production), or integer µs since the epoch (tests;
--            expiries are then never shorter than one hour, as the injected clock may run slow)
-- ARGV[2]    cost in units of every pair; 0 peeks (judges one unit, consumes nothing)
-- ARGV[3]    call token, unique per call ("<instance id>.<sequence>"): names sliding-log members
-- ARGV[4+6(i-1)] .. ARGV[9+6(i-1)]   policy i: algorithm name, limit, period_us, capacity
--            (burst or limit), shadow (1 | 0), max_debt. The caller has checked cost <= capacity.
-- ARGV[4+6N] .. ARGV[3+7N]   optional, a weighted check: pair i's own cost, instead of ARGV[2]
-- Reply:     { now_us, allowed (1 | 0), then for each policy i: allowed (1 | 0), remaining,
--              reset_after_us, retry_after_us (-1 when allowed), debt }
-- Writes:    only when a policy consumes, or when a stored time from the future was clamped;
--            every write sets an expiry at the time the state is back at rest (never a key
--            without TTL), and a state at rest is deleted.
-- Complexity: O(N) for N policies, plus each sliding log's own cost.

local now, min_ttl_ms = clock(ARGV[1])
local cost = tonumber(ARGV[2])

-- Phase 1: judge every policy; per policy i, its module, parameters and state (a, b).
local modules, limits, periods, capacities, as, bs, dirties, lefts = {}, {}, {}, {}, {}, {}, {}, {}
local costs, max_debts = {}, {}
local allowed = true
for i = 1, #KEYS do
  local m, limit, period, capacity, shadow, max_debt = policy_at(i)
  local a, b, dirty = m.load(KEYS[i], now, limit, period, capacity, max_debt)
  local left = m.remaining(a, b, now, limit, period, capacity)
  costs[i] = cost_at(i, cost)
  if math.max(costs[i], 1) > left and not shadow then allowed = false end
  modules[i], limits[i], periods[i], capacities[i], max_debts[i] = m, limit, period, capacity,
    max_debt
  as[i], bs[i], dirties[i], lefts[i] = a, b, dirty, left
end

-- Phase 2: consume only if every enforced policy admits (shadow ones consume when they admit).
local reply = { now, allowed and 1 or 0 }
for i = 1, #KEYS do
  local m = modules[i]
  local admits, left, reset, retry, debt = conclude(m.consume, m.wait, m.reset_after, m.store,
    m.debt, KEYS[i], as[i], bs[i], dirties[i], lefts[i], now, costs[i], allowed, limits[i],
    periods[i], capacities[i], max_debts[i], ARGV[3] .. ':' .. i .. ':', min_ttl_ms)
  reply[#reply + 1] = admits
  reply[#reply + 1] = left
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
  reply[#reply + 1] = debt
end
return reply
