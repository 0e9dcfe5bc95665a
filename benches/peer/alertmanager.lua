-- wrk: POSTs the reference Alertmanager notification ($BENCH_BODY) with $BENCH_TOKEN; with
-- BENCH_UNIQUE=1 every request is another alert (its own fingerprint and backup_id label).
local body = assert(io.open(os.getenv("BENCH_BODY"))):read("*a")
local unique = os.getenv("BENCH_UNIQUE") == "1"

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local sent = 0
function request()
  if not unique then
    return wrk.format()
  end
  sent = sent + 1
  local id = thread_id .. "-" .. sent
  local varied = body
    :gsub('"5f1c2a9e7b3d4c10"', '"bench-' .. id .. '"')
    :gsub('"backup_id": "451"', '"backup_id": "' .. id .. '"')
  return wrk.format(nil, nil, nil, varied)
end
