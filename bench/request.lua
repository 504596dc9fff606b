-- wrk script: the method and body of each request, from the environment
-- (BENCH_METHOD, BENCH_BODY_BYTES): `webdav` PUTs 4 KiB files this way.
-- pipeline.lua reads it too, so both measures send the same requests.
local method = os.getenv("BENCH_METHOD")
if method and method ~= "" then
  wrk.method = method
end
local bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
if bytes > 0 then
  wrk.body = string.rep("x", bytes)
end
