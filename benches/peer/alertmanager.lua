-- wrk: POSTs the reference Alertmanager notification ($BENCH_BODY) with $BENCH_TOKEN; with
-- BENCH_UNIQUE=1 every request is another alert (its own fingerprint and backup_id label).
--
-- wrk shares the machine with the server it measures, so it should cost as little as it can:
-- the repeated load is wrk's own prebuilt request (no Lua per request), and a unique request
-- is its prebuilt template with the ids put in, never a rewrite of the whole body.
local body = assert(io.open(os.getenv("BENCH_BODY"))):read("*a")
local unique = os.getenv("BENCH_UNIQUE") == "1"

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

if unique then
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("thread_id", threads)
  end

  -- Ids of one width (the thread, then a counter) keep every body the template's length, so
  -- its Content-Length holds for all of them.
  local placeholder = string.rep("#", 12)
  local prefix, middle, suffix
  local sent = 0

  function init(args)
    local marked = body
      :gsub('"5f1c2a9e7b3d4c10"', '"bench-' .. placeholder .. '"')
      :gsub('"backup_id": "451"', '"backup_id": "' .. placeholder .. '"')
    local template = wrk.format(nil, nil, nil, marked)
    local first = assert(template:find(placeholder, 1, true))
    local second = assert(template:find(placeholder, first + #placeholder, true))
    prefix = template:sub(1, first - 1)
    middle = template:sub(first + #placeholder, second - 1)
    suffix = template:sub(second + #placeholder)
  end

  function request()
    sent = sent + 1
    local id = string.format("%02d%010d", thread_id, sent)
    return prefix .. id .. middle .. id .. suffix
  end
end
