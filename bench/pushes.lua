-- wrk script of bench/push_throughput.py: POSTs pre-built pushes, each request a different one.
--
--   BENCH_PUSHES=pushes.bin wrk -t2 -c32 -d10s -s bench/pushes.lua http://127.0.0.1:PORT
--
-- The file holds records "<target length> <body length>\n<target><body>" (target = path?query).
-- Thread i of n cycles through its own slice [i*N/n, (i+1)*N/n), so no two requests repeat a
-- push until a slice wraps (counted as "wrapped"). done() prints one line "BENCH {json}".

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

local requests_ = {}
local first, last, cursor = 1, 0, 0
non200, wrapped, statuses = 0, 0, {}

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
   last = first + share - 1
   local headers = {["Content-Type"] = "text/xml"}
   for i = first, last do
      requests_[i] = wrk.format("POST", all[i][1], headers, all[i][2])
   end
   cursor = first - 1
end

function request()
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
end

function done(summary, latency, requests)
   local non, wraps, codes = 0, 0, {}
   for _, thread in ipairs(threads) do
      non = non + thread:get("non200")
      wraps = wraps + thread:get("wrapped")
      for code, count in pairs(thread:get("statuses")) do
         codes[#codes + 1] = string.format('"%d":%d', code, count)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"non200":%d,"wrapped":%d,"statuses":{%s},"connect":%d,"read":%d,' ..
      '"write":%d,"timeout":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, non, wraps, table.concat(codes, ","),
      e.connect, e.read, e.write, e.timeout))
end
