-- POST /graphql: one product with its category, ids uniform over 1..RECORDS.
local records = tonumber(os.getenv("RECORDS") or "10000")
math.randomseed(os.time())
local headers = { ["Content-Type"] = "application/json" }
request = function()
  local body = string.format(
    '{"query":"query($id: ID!) { product(id: $id) { name price category { name } } }","variables":{"id":"%d"}}',
    math.random(1, records))
  return wrk.format("POST", "/graphql", headers, body)
end
