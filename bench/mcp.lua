-- wrk script: POST one JSON-RPC message to /mcp again and again over kept-alive connections.
-- BENCH_BODY: the message, whose "id" is the string "__ID__": every request gets its own number, since
-- a session must not see two requests in flight with one id (the SDK's stateful mode then
-- answers one of them only); BENCH_AUTH: Authorization header value (optional); BENCH_SESSION: Mcp-Session-Id.
wrk.method = "POST"
local body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Protocol-Version"] = "2025-11-25"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
local session = os.getenv("BENCH_SESSION")
if session and session ~= "" then wrk.headers["Mcp-Session-Id"] = session end

local next_id = 0
function request()
  next_id = next_id + 1
  return wrk.format(nil, nil, nil, (string.gsub(body, '"__ID__"', tostring(next_id), 1)))
end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
-- A 200 that carries a JSON-RPC error or a tool error is a failure too.
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"error"', 1, true) or string.find(body, '"isError":true', 1, true) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local failures = 0
  for _, thread in ipairs(threads) do failures = failures + thread:get("bad") end
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %.3f, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, "failures": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    failures, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
