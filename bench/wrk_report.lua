-- wrk script for the benchmark: prints one machine-readable line, "BENCH {json}", when wrk is done.
--
-- Mixed mode (BENCH_SLOW_EVERY=N, BENCH_SLOW_PATH=/sleep): every Nth request of each connection goes to
-- the slow path and the rest to the URL's path, and each request is timed by path. wrk's own latency
-- figures mix both paths, so this times them here. Timing a request from request() to response() is
-- only sound with one connection per thread (-t N -c N): then the two calls alternate in each thread's
-- Lua state. The harness runs mixed mode that way. A request lost to an error is never answered; the next
-- request() overwrites its start time, so it is counted in wrk's errors, not in the latencies.
-- Each thread's rate over its own span (first request sent to last response) is summed as span_req_s:
-- wrk's duration runs to its last thread's stop, which comes up to 100 ms after the others'.
--
-- Varying mode (BENCH_VARY=1): each request's query string carries a counter ("/?n=1", "/?n=2", ...), so no
-- two heads a server sees on a connection are the same, as with real clients. Without it wrk sends one
-- head, built once, again and again. The head is built once here too, around the counter, to stay cheap.

local every = tonumber(os.getenv("BENCH_SLOW_EVERY") or "")
local vary = os.getenv("BENCH_VARY") == "1"
local slow_path = os.getenv("BENCH_SLOW_PATH") or "/sleep"
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

if every then
   local ffi = require("ffi")
   ffi.cdef[[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clk, bench_timespec *tp);
   ]]
   local CLOCK_MONOTONIC = 1
   local ts = ffi.new("bench_timespec")
   local function now_us()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
      return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
   end

   fast, slow = {}, {}
   first_us, last_us = nil, nil
   local sent, started, is_slow = 0, nil, false

   function request()
      sent = sent + 1
      is_slow = sent % every == 0
      started = now_us()
      first_us = first_us or started
      return wrk.format(nil, is_slow and slow_path or wrk.path)
   end

   function response(status, headers, body)
      if started then
         local list = is_slow and slow or fast
         last_us = now_us()
         list[#list + 1] = math.floor(last_us - started)
         started = nil
      end
   end
end

if vary and not every then
   local sent, before, after = 0, nil, nil

   request = function()
      if not before then
         local sep = wrk.path:find("?", 1, true) and "&" or "?"
         before, after = wrk.format(nil, wrk.path .. sep .. "n=\1"):match("^(.-)\1(.*)$")
      end
      sent = sent + 1
      return before .. sent .. after
   end
end

local function join(list)
   local parts = {}
   for i, v in ipairs(list) do parts[i] = string.format("%d", v) end
   return table.concat(parts, ",")
end

function done(summary, latency, requests)
   local e = summary.errors
   local mixed = ""
   if every then
      local f, s, rate = {}, {}, 0
      for _, t in ipairs(threads) do
         local tf, ts = t:get("fast") or {}, t:get("slow") or {}
         for _, v in ipairs(tf) do f[#f + 1] = v end
         for _, v in ipairs(ts) do s[#s + 1] = v end
         local first, last = t:get("first_us"), t:get("last_us")
         if first and last and last > first then rate = rate + (#tf + #ts) * 1e6 / (last - first) end
      end
      mixed = string.format(',"fast_us":[%s],"slow_us":[%s],"span_req_s":%.1f', join(f), join(s), rate)
   end
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d%s}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), mixed))
end
