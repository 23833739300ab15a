-- wrk script: POST /v1/check for one of 10 000 keys, chosen at random per request.
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = '{"policy": "high", "key": "' .. math.random(0, 9999) .. '"}'
  return wrk.format(nil, "/v1/check", nil, body)
end
