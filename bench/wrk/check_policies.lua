-- wrk script: POST /v1/check of POLICIES policies (p1 .. pN, from the environment; default 1)
-- for one of 10 000 keys, chosen at random per request.
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local count = tonumber(os.getenv("POLICIES") or "1")
local names = {}
for i = 1, count do names[i] = '"p' .. i .. '"' end
local policies = '[' .. table.concat(names, ', ') .. ']'
request = function()
  local body = '{"policies": ' .. policies .. ', "key": "' .. math.random(0, 9999) .. '"}'
  return wrk.format(nil, "/v1/check", nil, body)
end
