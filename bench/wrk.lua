-- wrk script for bench/run.sh.
--
-- Environment:
--   BENCH_BASIC   set: POST grant_type=client_credentials with "Authorization: Basic $BENCH_BASIC"
--                 (form content type); unset: plain GET of the URL given to wrk.
--   BENCH_EXPECT  a substring every response body must contain (e.g. "access_token").
--
-- Every response is checked in the worker threads: status must be 200 and the body must contain
-- BENCH_EXPECT. done() prints one machine-readable line, prefixed "BENCH ", with throughput,
-- latency percentiles (microseconds) and the failure counts; run.sh collects those lines.

local basic = os.getenv("BENCH_BASIC")
local expect = os.getenv("BENCH_EXPECT")

if basic and basic ~= "" then
  wrk.method = "POST"
  wrk.body = "grant_type=client_credentials"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  wrk.headers["Authorization"] = "Basic " .. basic
  wrk.headers["Accept"] = "application/json"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  non200 = 0
  badbody = 0
  firstbad = ""
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if firstbad == "" then firstbad = tostring(status) end
  elseif expect and not string.find(body, expect, 1, true) then
    badbody = badbody + 1
    if firstbad == "" then firstbad = "body" end
  else
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_non200, total_badbody, first = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_non200 = total_non200 + t:get("non200")
    total_badbody = total_badbody + t:get("badbody")
    if first == "" then first = t:get("firstbad") end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"ok":%d,"non200":%d,"badbody":%d,' ..
    '"first_bad":"%s","socket_errors":%d,"timeouts":%d,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,' ..
    '"lat_max_us":%d}\n',
    summary.requests, seconds, summary.requests / seconds, total_ok, total_non200,
    total_badbody, first, e.connect + e.read + e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
