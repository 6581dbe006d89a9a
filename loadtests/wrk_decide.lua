-- wrk script: POST /decide with the benchmark's request bodies, optionally at a fixed rate.
--
--   wrk -t1 -c50 -d15s -s loadtests/wrk_decide.lua http://127.0.0.1:8000 -- BODIES RATE KEY
--
-- BODIES: a file with one JSON request body per line (loadtests/bench.py writes it).
-- RATE:   offered requests/s for this thread (0 = as fast as the connections allow).
--         Requests are sent on a fixed schedule (slot k at t0 + k/RATE, claimed as
--         connections free up), so the offered rate holds while the server keeps up; the
--         achieved rate shows when it does not (add connections if latency x rate > them).
-- KEY:    API key sent as "Authorization: Bearer KEY" (empty: none).
-- done() prints one line "WRK_JSON {...}" with latency percentiles (microseconds), errors and
-- the number of 200 responses flagged degraded (a fallback decision is not a full one).

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } nb_timespec;
  int clock_gettime(int clk_id, nb_timespec *tp);
]]
local ts = ffi.new("nb_timespec[1]")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts[0].tv_sec) * 1000.0 + tonumber(ts[0].tv_nsec) / 1e6
end

local bodies = {}
local n, i = 0, 0
local interval, next_slot = 0, nil
local headers = { ["Content-Type"] = "application/json" }
local threads = {}
degraded = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
  local rate = tonumber(args[2] or "0") or 0
  if rate > 0 then interval = 1000.0 / rate end
  if args[3] and args[3] ~= "" then headers["Authorization"] = "Bearer " .. args[3] end
  i = math.random(n) - 1
end

function delay()
  if interval == 0 then return 0 end
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  next_slot = next_slot + interval
  local wait = next_slot - now
  if wait <= 0 then return 0 end
  return math.floor(wait)
end

function request()
  i = i % n + 1
  return wrk.format("POST", "/decide", headers, bodies[i])
end

function response(status, headers, body)
  if status == 200 and not string.find(body, '"degraded":[]', 1, true) then
    degraded = degraded + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local d = 0
  for _, t in ipairs(threads) do d = d + (t:get("degraded") or 0) end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, "degraded": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, d))
end
