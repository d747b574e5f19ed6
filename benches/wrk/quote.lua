-- GET /Quote/<symbol> for symbols S1..S<RECORDS> drawn uniformly (RECORDS from the environment).
local records = tonumber(os.getenv("RECORDS") or "10000")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/Quote/S" .. math.random(1, records))
end
