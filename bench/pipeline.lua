-- wrk script: 16 requests per write, so the server, not the client, is the
-- bottleneck. wrk counts each response, so requests/s stay comparable.
dofile("bench/request.lua")
local depth = tonumber(os.getenv("PIPELINE_DEPTH") or "16")
init = function(args)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format(nil)
  end
  req = table.concat(r)
end
request = function()
  return req
end
