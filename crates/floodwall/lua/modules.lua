-- floodwall: the algorithm modules of the multi-policy scripts (decide.lua, adjust.lua), built on
-- first use in a call. Follows the `<name>_module` constructors and the `constructors` table that
-- the script assembly generates from the algorithm registry.

local built = {}

-- The module of algorithm `name` (load, remaining, wait, consume, refund, debit, debt, reset_after,
-- store), or
-- nil for a name no module has.
local function module_for(name)
  local m = built[name]
  if not m and constructors[name] then
    m = constructors[name]()
    built[name] = m
  end
  return m
end

-- Policy i's module and parameters from ARGV (the layout is decide.lua's): module, limit,
-- period_us, capacity, whether it is in shadow mode, and max_debt. An unknown algorithm is a
-- script error.
local function policy_at(i)
  local base = 4 + 6 * (i - 1)
  local m = module_for(ARGV[base])
  if not m then
    error({ err = 'floodwall: unknown algorithm ' .. tostring(ARGV[base]) })
  end
  return m, tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]),
    ARGV[base + 4] == '1', tonumber(ARGV[base + 5])
end

-- Pair i's cost: ARGV[2] for every pair, unless the caller appended one cost per pair after the
-- policies (a weighted check).
local function cost_at(i, cost)
  local each = ARGV[3 + 6 * #KEYS + i]
  if each then return tonumber(each) end
  return cost
end
