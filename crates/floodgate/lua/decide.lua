-- floodgate decision script: one request of `cost` units for one client under N policies, decided
-- all-or-nothing in one atomic call. Assembled after prelude.lua and the five algorithm modules,
-- each wrapped in a constructor (`<name>_module`) so that a call builds only the ones it uses.
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
local modules = {}
local function algorithm(name)
  local built = modules[name]
  if not built and constructors[name] then
    built = constructors[name]()
    modules[name] = built
  end
  return built
end

local now, min_ttl_ms
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now, min_ttl_ms = tonumber(t[1]) * 1000000 + tonumber(t[2]), 0
else
  now, min_ttl_ms = tonumber(ARGV[1]), 3600000
end
local cost = tonumber(ARGV[2])
local need = math.max(cost, 1)

local policies, states, remaining, admits = {}, {}, {}, {}
local allowed = true
for i = 1, #KEYS do
  local base = 4 + 5 * (i - 1)
  local p = {
    algorithm = algorithm(ARGV[base]),
    limit = tonumber(ARGV[base + 1]),
    period = tonumber(ARGV[base + 2]),
    capacity = tonumber(ARGV[base + 3]),
    shadow = ARGV[base + 4] == '1',
    call = ARGV[3],
    index = i,
  }
  if not p.algorithm then
    return redis.error_reply('floodgate: unknown algorithm ' .. tostring(ARGV[base]))
  end
  local s = p.algorithm.load(KEYS[i], now, p)
  policies[i], states[i] = p, s
  remaining[i] = p.algorithm.remaining(s, now, p)
  admits[i] = need <= remaining[i]
  if not admits[i] and not p.shadow then allowed = false end
end

local reply = { now, allowed and 1 or 0 }
for i = 1, #KEYS do
  local p, s = policies[i], states[i]
  local consumed = allowed and admits[i] and cost > 0
  local left = remaining[i]
  if consumed then
    p.algorithm.consume(s, now, cost, p)
    left = left - cost
  end
  local retry = -1
  if not admits[i] then retry = p.algorithm.wait(s, now, need, p) end
  local reset = p.algorithm.reset_after(s, now, p)
  if consumed or s.dirty then
    if reset > 0 then
      p.algorithm.store(KEYS[i], s, now, p, reset, min_ttl_ms)
    else
      redis.call('DEL', KEYS[i])
    end
  end
  reply[#reply + 1] = admits[i] and 1 or 0
  reply[#reply + 1] = left
  reply[#reply + 1] = reset
  reply[#reply + 1] = retry
end
return reply
