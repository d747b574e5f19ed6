-- POST /graphql: 100 categories, each with a relation (its first 10 products).
local headers = { ["Content-Type"] = "application/json" }
local body = '{"query":"{ categoryList(first: 100) { nodes { name products(first: 10) { name price } } } }"}'
request = function()
  return wrk.format("POST", "/graphql", headers, body)
end
