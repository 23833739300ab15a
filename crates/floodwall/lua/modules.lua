-- floodwall: the algorithm modules of the multi-policy scripts (decide.lua, refund.lua), built on
-- first use in a call. Follows the `<name>_module` constructors and the `constructors` table that
-- the script assembly generates from the algorithm registry.

local built = {}

-- The module of algorithm `name` (load, remaining, wait, consume, refund, reset_after, store), or
-- nil for a name no module has.
local function module_for(name)
  local m = built[name]
  if not m and constructors[name] then
    m = constructors[name]()
    built[name] = m
  end
  return m
end
