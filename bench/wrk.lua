-- wrk script for bench/run.sh.
--
-- Environment:
--   BENCH_BASIC    set: POST grant_type=client_credentials with "Authorization: Basic $BENCH_BASIC"
--                  (form content type); unset: a GET of the URL given to wrk.
--   BENCH_BASIC_FILE  a file of Basic credentials, one base64(client_id:secret) a line: the
--                  same POST, each request with the credentials of a line picked uniformly at
--                  random (the client-scaling scenarios of run.sh, CLIENTS); the requests are
--                  built once per line in init(), so picking one costs wrk a table lookup.
--   BENCH_HEADERS  request headers, one "Name: value" per line (e.g. the forward-auth
--                  scenarios' x-api-key or Authorization and X-Forwarded-*).
--   BENCH_EXPECT   a substring every response body must contain (e.g. "access_token").
--   BENCH_EXPECT_HEADER  "name: substring": every response must carry header `name` (any case)
--                  containing `substring` (e.g. "x-auth-permissions: invoices.read").
--
-- Every response is checked in the worker threads: status must be 200, the body must contain
-- BENCH_EXPECT and the header BENCH_EXPECT_HEADER. done() prints one machine-readable line,
-- prefixed "BENCH ", with throughput, latency percentiles (microseconds) and the failure
-- counts; run.sh collects those lines and fails a run with any failure.

local basic = os.getenv("BENCH_BASIC")
local expect = os.getenv("BENCH_EXPECT")
local extra = os.getenv("BENCH_HEADERS")
local expect_header = os.getenv("BENCH_EXPECT_HEADER")
local basic_file = os.getenv("BENCH_BASIC_FILE")
local want_name, want_value
local pool  -- with BENCH_BASIC_FILE: one ready request per client

if basic_file == "" then basic_file = nil end
if (basic and basic ~= "") or basic_file then
  wrk.method = "POST"
  wrk.body = "grant_type=client_credentials"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  if basic and basic ~= "" then wrk.headers["Authorization"] = "Basic " .. basic end
  wrk.headers["Accept"] = "application/json"
end
if extra and extra ~= "" then
  for line in string.gmatch(extra, "[^\n]+") do
    local name, value = string.match(line, "^%s*([^:]-)%s*:%s*(.-)%s*$")
    if name and name ~= "" then wrk.headers[name] = value end
  end
end
if expect == "" then expect = nil end
if expect_header and expect_header ~= "" then
  want_name, want_value = string.match(expect_header, "^%s*([^:]-)%s*:%s*(.-)%s*$")
  want_name = string.lower(want_name)
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
  if basic_file then
    pool = {}
    for line in io.lines(basic_file) do
      if line ~= "" then
        wrk.headers["Authorization"] = "Basic " .. line
        pool[#pool + 1] = wrk.format()
      end
    end
    assert(#pool > 0, "BENCH_BASIC_FILE has no credentials")
    math.randomseed(os.time())
  end
end

-- Defined only with BENCH_BASIC_FILE: without it wrk sends its one prepared request.
if basic_file then
  function request()
    return pool[math.random(#pool)]
  end
end

local function header_ok(headers)
  for name, value in pairs(headers) do
    if string.lower(name) == want_name then
      return string.find(value, want_value, 1, true) ~= nil
    end
  end
  return false
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if firstbad == "" then firstbad = tostring(status) end
  elseif expect and not string.find(body, expect, 1, true) then
    badbody = badbody + 1
    if firstbad == "" then firstbad = "body" end
  elseif want_name and not header_ok(headers) then
    badbody = badbody + 1
    if firstbad == "" then firstbad = "header " .. want_name end
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
