-- floodwall prefetch script: takes units of one fixed_window key for an instance to spend itself,
-- or gives back the units it did not spend. Assembled after prelude.lua and fixed_window.lua.
--
-- KEYS[1]: the state key. ARGV[1]: now_us, or empty for Redis TIME; ARGV[2]: 'take' or 'give';
-- ARGV[3], ARGV[4]: the policy's limit and period, as decide.lua takes them; ARGV[7]: its
-- max_debt; and
--   take: ARGV[5] the most units to take, ARGV[6] the fewest (the request's cost): takes
--         min(most, remaining) when that is at least the fewest, else nothing;
--   give: ARGV[5] the units, ARGV[6] the start of the window that counted them. They are given
--         back only while that window is the current one: a unit of an ended window can no
--         longer be spent, and giving it to the next window would admit more than its limit.
-- Reply: { now_us, units taken or given back (0: none), remaining, reset_after_us,
--          retry_after_us (-1 unless a take moved nothing), start of the current window }
-- Writes: the key, with an expiry at the end of its window, when units moved.
-- Complexity: O(1).

if #KEYS ~= 1 then
  return redis.error_reply('floodwall: the prefetch script moves units of one key')
end
local now, min_ttl_ms = clock(ARGV[1])
local key = KEYS[1]
local limit, period = tonumber(ARGV[3]), tonumber(ARGV[4])
local units, bound = tonumber(ARGV[5]), tonumber(ARGV[6])
local start = window(now, period)

local max_debt = tonumber(ARGV[7])
local a, b, dirty = load(key, now, limit, period, limit, max_debt)
local left = remaining(a, b, now, limit, period, limit)
local moved, retry = 0, -1
if ARGV[2] == 'take' then
  if left >= bound then
    moved = math.min(units, left)
    a, b = consume(key, a, b, now, moved, limit, period, '')
  else
    retry = wait(key, a, b, now, bound, limit, period, limit, max_debt)
  end
elseif start == bound then
  moved = math.min(units, a)
  a, b = refund(key, a, b, now, moved, limit, period, limit)
end
left = remaining(a, b, now, limit, period, limit)
local reset = reset_after(a, b, now, limit, period, limit, max_debt)
if moved > 0 or dirty then persist(store, key, a, b, now, period, reset, min_ttl_ms) end
return { now, moved, left, reset, retry, start }
