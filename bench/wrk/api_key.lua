-- wrk script: GET / with one of 10 000 X-Api-Key values, chosen at random per request.
math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
request = function()
  return wrk.format("GET", "/", { ["X-Api-Key"] = tostring(math.random(0, 9999)) })
end
