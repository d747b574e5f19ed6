-- The two REST GETs one GraphQL query with a reference replaces, alternating: /Product/<id>,
-- then /Category/<its category> (seeded as category-<id % 100>); ids uniform over 1..RECORDS.
local records = tonumber(os.getenv("RECORDS") or "10000")
math.randomseed(os.time())
local next_category = nil
request = function()
  if next_category then
    local path = "/Category/category-" .. next_category
    next_category = nil
    return wrk.format("GET", path)
  end
  local id = math.random(1, records)
  next_category = id % 100
  return wrk.format("GET", "/Product/" .. id)
end
