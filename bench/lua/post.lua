-- wrk script: POST JSON bodies read from $BENCH_BODIES (one per line), with the
-- bench API key. Thread t of $BENCH_THREADS sends lines t, t + n, t + 2n, ...
-- cycling, so bodies that must be used once (rewards) are never shared between
-- threads. done() prints one machine-readable line: WRK_JSON {...}.

local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local bodies = {}
local i = 0

function init(args)
  local n = tonumber(os.getenv("BENCH_THREADS") or "1")
  local k = 0
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if k % n == tid then bodies[#bodies + 1] = line end
    k = k + 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local key = os.getenv("BENCH_API_KEY")
  if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
  if os.getenv("BENCH_CONNECTION_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
end

function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout))
end
