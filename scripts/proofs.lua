-- wrk script: random inclusion proofs against a tree of SIZE entries.
--   SIZE=1000000 wrk -t2 -c16 -d10s -s scripts/proofs.lua http://127.0.0.1:8400
local size = tonumber(os.getenv("SIZE"))
math.randomseed(os.time())
request = function()
  local i = math.random(0, size - 1)
  return wrk.format("GET", "/api/v1/proof/inclusion?index=" .. i .. "&size=" .. size)
end
