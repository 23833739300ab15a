-- floodwall decision script: one request of `cost` units for one client under N policies, decided
-- all-or-nothing in one atomic call. Assembled after prelude.lua and the five algorithm modules,
-- each wrapped in a constructor (`<name>_module`, returning its six functions) so that a call
-- builds only the ones it uses.
--
-- KEYS[i]    the state key of policy i. All keys share the client's hash tag: one cluster slot.
-- ARGV[1]    now_us: empty to read Redis TIME (production), or integer µs since the epoch (tests;
--            expiries are then never shorter than one hour, as the injected clock may run slow)
-- ARGV[2]    cost in units; 0 peeks (judges one unit, consumes nothing)
-- ARGV[3]    call token, unique per call ("<instance id>:<sequence>"): names sliding-log members
-- ARGV[4+5(i-1)] .. ARGV[8+5(i-1)]   policy i: algorithm name, limit, period_us, capacity
--            (burst or limit), shadow (1 | 0). The caller has checked cost <= capacity.
-- Reply:     { now_us, allowed (1 | 0), then for each policy i: allowed (1 | 0), remaining,
--              reset_after_us, retry_after_us (-1 when allowed) }
-- Writes:    only when a policy consumes, or when a stored time from the future was clamped;
--            every write sets an expiry at the time the state is back at rest (never a key
--            without TTL), and a state at rest is deleted.
-- Complexity: O(N) for N policies, plus each sliding log's own cost.

local constructors = {
  fixed_window = fixed_window_module,
  sliding_log = sliding_log_module,
  sliding_window = sliding_window_module,
  token_bucket = token_bucket_module,
  gcra = gcra_module,
}
local built = {}

local now, min_ttl_ms = clock(ARGV[1])
local cost = tonumber(ARGV[2])
local need = math.max(cost, 1)

-- Phase 1: judge every policy; per policy i, its module, parameters and state (a, b).
local modules, limits, periods, capacities, as, bs, dirties, lefts = {}, {}, {}, {}, {}, {}, {}, {}
local allowed = true
for i = 1, #KEYS do
  local base = 4 + 5 * (i - 1)
  local name = ARGV[base]
  local m = built[name]
  if not m then
    if not constructors[name] then
      return redis.error_reply('floodwall: unknown algorithm ' .. tostring(name))
    end
    m = constructors[name]()
    built[name] = m
  end
  local limit, period, capacity = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local a, b, dirty = m.load(KEYS[i], now, limit, period, capacity)
  local left = m.remaining(a, b, now, limit, period, capacity)
  if need > left and ARGV[base + 4] ~= '1' then allowed = false end
  modules[i], limits[i], periods[i], capacities[i] = m, limit, period, capacity
  as[i], bs[i], dirties[i], lefts[i] = a, b, dirty, left
end

-- Phase 2: consume only if every enforced policy admits (shadow ones consume when they admit).
local reply = { now, allowed and 1 or 0 }
for i = 1, #KEYS do
  local m, key, limit, period, capacity = modules[i], KEYS[i], limits[i], periods[i], capacities[i]
  local a, b, left = as[i], bs[i], lefts[i]
  local admits = need <= left
  local consumed = allowed and admits and cost > 0
  if consumed then
    a, b = m.consume(key, a, b, now, cost, limit, period, ARGV[3] .. ':' .. i .. ':')
    left = left - cost
  end
  local retry = -1
  if not admits then retry = m.wait(key, a, b, now, need, limit, period, capacity) end
  local reset = m.reset_after(a, b, now, limit, period, capacity)
  if consumed or dirties[i] then
    if reset > 0 then
      m.store(key, a, b, now, period, expiry_ms(reset, min_ttl_ms))
    else
      redis.call('DEL', key)
    end
  end
  reply[#reply + 1] = admits and 1 or 0
  reply[#reply + 1] = left
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
end
return reply
