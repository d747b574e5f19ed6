-- Durable PUT /Product/<id> replacing ids drawn uniformly from 1..RECORDS (default 100000).
local records = tonumber(os.getenv("RECORDS") or "100000")
math.randomseed(os.time() + 1)
local headers = { ["Content-Type"] = "application/json" }
request = function()
  local id = math.random(1, records)
  local body = string.format(
    '{"name":"Product %d","category":"category-%d","price":%d.5,"currency":"EUR","tags":["colour-%d","size-%d"],"inStock":true}',
    id, id % 100, id % 1000, id % 7, id % 13)
  return wrk.format("PUT", "/Product/" .. id, headers, body)
end
