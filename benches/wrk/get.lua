-- GET /Product/<id> for ids drawn uniformly from 1..RECORDS (environment, default 100000).
local records = tonumber(os.getenv("RECORDS") or "100000")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/Product/" .. math.random(1, records))
end
