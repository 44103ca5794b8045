-- wrk script of bench/push_throughput.py and bench/reply_throughput.py: POSTs pre-built pushes,
-- each request a different one.
--
--   BENCH_PUSHES=pushes.bin BENCH_THREADS=2 BENCH_START_US=<epoch us> \
--       wrk -t2 -c32 -d10s -s bench/pushes.lua http://127.0.0.1:PORT
--
-- The file holds records "<target length> <body length>\n<target><body>" (target = path?query).
-- Thread i of n cycles through its own slice [i*N/n, (i+1)*N/n) (the last thread also takes
-- the remainder), so no two requests repeat a push until a slice wraps (counted as "wrapped").
-- done() prints one line "BENCH {json}".
--
-- With BENCH_ONCE=<file>, each push is sent once: a connection asks for a push before each
-- request (delay(), called by wrk before every request once the script defines it) and idles
-- when none is left; a thread whose pushes were all answered stops and appends a line to
-- <file>. wrk itself runs on until its duration ends: the caller sends it SIGINT once the file
-- has a line per thread, and done() still reports. "finished_us": from BENCH_START_US to the
-- last answer.
--
-- wrk loads each thread's script in turn, and a thread starts sending as soon as its own is
-- loaded, while the next one still loads (for a few hundred ms, uncounted by wrk's duration).
-- So no thread sends before BENCH_START_US (set past the time the loading takes), and done()
-- reports the time from then on ("active_us"): requests over it is the rate.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
int usleep(unsigned int microseconds);
]]
local clock = ffi.new("bench_timespec")

local function now_us()
   ffi.C.clock_gettime(0, clock)   -- CLOCK_REALTIME, the clock of BENCH_START_US
   return tonumber(clock.tv_sec) * 1e6 + tonumber(clock.tv_nsec) / 1e3
end

local start_us = tonumber(os.getenv("BENCH_START_US"))
local waiting = true
late = 0

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

local requests_ = {}
local first, last, cursor = 1, 0, 0
non200, wrapped, statuses = 0, 0, {}
answered, finished_us = 0, 0

local once = os.getenv("BENCH_ONCE")
local reserved = 0   -- pushes handed to this thread's connections so far
if once then
   function delay()
      if reserved <= last - first then
         reserved = reserved + 1
         return 0
      end
      return 3600000   -- no push left for this connection: idle until the thread stops
   end
end

function init(args)
   local f = assert(io.open(os.getenv("BENCH_PUSHES"), "rb"))
   local data = f:read("*a")
   f:close()
   local all, pos = {}, 1
   while pos <= #data do
      local s, e, tlen, blen = data:find("^(%d+) (%d+)\n", pos)
      assert(s, "bad pushes file at byte " .. pos)
      tlen, blen = tonumber(tlen), tonumber(blen)
      local target = data:sub(e + 1, e + tlen)
      local body = data:sub(e + tlen + 1, e + tlen + blen)
      all[#all + 1] = {target, body}
      pos = e + tlen + blen + 1
   end
   local n = tonumber(os.getenv("BENCH_THREADS"))
   local share = math.floor(#all / n)
   first = index * share + 1
   last = index == n - 1 and #all or first + share - 1
   local headers = {["Content-Type"] = "text/xml"}
   for i = first, last do
      requests_[i] = wrk.format("POST", all[i][1], headers, all[i][2])
   end
   cursor = first - 1
   if now_us() > start_us then
      late = 1   -- loaded after the start: this thread's connections start late
   end
end

-- wrk's main thread calls the first thread's request() once, to check it, before that thread
-- runs: what it gets is never sent, so it takes no push.
local verified = false

function request()
   if index == 0 and not verified then
      verified = true
      return requests_[first]
   end
   if waiting then
      local left = start_us - now_us()
      while left > 0 do
         ffi.C.usleep(math.min(left, 100000))
         left = start_us - now_us()
      end
      waiting = false
   end
   cursor = cursor + 1
   if cursor > last then
      cursor, wrapped = first, wrapped + 1
   end
   return requests_[cursor]
end

function response(status, headers, body)
   if status ~= 200 then
      non200 = non200 + 1
      statuses[status] = (statuses[status] or 0) + 1
   end
   answered = answered + 1
   if once and answered == last - first + 1 then
      finished_us = now_us() - start_us
      local f = assert(io.open(once, "a"))
      f:write(index, "\n")
      f:close()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local active = now_us() - start_us
   local non, wraps, codes, lates, answers, finished = 0, 0, {}, 0, 0, 0
   for _, thread in ipairs(threads) do
      lates = lates + thread:get("late")
      answers = answers + thread:get("answered")
      finished = math.max(finished, thread:get("finished_us"))
      non = non + thread:get("non200")
      wraps = wraps + thread:get("wrapped")
      for code, count in pairs(thread:get("statuses")) do
         codes[#codes + 1] = string.format('"%d":%d', code, count)
      end
   end
   -- 999 quantiles (0.1 % .. 99.9 %), so that runs can be merged into one distribution.
   local quantiles = {}
   for i = 1, 999 do
      quantiles[i] = string.format("%d", latency:percentile(i / 10))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"non200":%d,"wrapped":%d,"statuses":{%s},"connect":%d,"read":%d,' ..
      '"write":%d,"timeout":%d,"quantiles_us":[%s],"active_us":%d,"late_threads":%d,' ..
      '"answered":%d,"finished_us":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, non, wraps, table.concat(codes, ","),
      e.connect, e.read, e.write, e.timeout, table.concat(quantiles, ","), active, lates,
      answers, finished))
end
