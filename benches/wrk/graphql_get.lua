-- GET /graphql?query=...: one product with its category by a query in the URL (as persisted
-- queries and CDNs have it), ids uniform over 1..RECORDS.
local records = tonumber(os.getenv("RECORDS") or "10000")
math.randomseed(os.time())
request = function()
  local query = "%7Bproduct(id%3A" .. math.random(1, records) .. ")%7Bname%20price%20category%7Bname%7D%7D%7D"
  return wrk.format("GET", "/graphql?query=" .. query)
end
