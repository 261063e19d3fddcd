-- wrk script of benchmarks/bench_load.py: the request paths (BENCH_PATHS, comma-separated, taken in
-- turn; else the URL's own path) and a count of responses per HTTP status. At the end one line
-- "BENCH_JSON {...}" with the totals, socket errors and latency percentiles (microseconds).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  paths = {}
  for p in string.gmatch(os.getenv("BENCH_PATHS") or "", "[^,]+") do
    table.insert(paths, p)
  end
  n = 0
end

function request()
  if #paths == 0 then
    return wrk.format()
  end
  n = n + 1
  return wrk.format(nil, paths[(n % #paths) + 1])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      counts[code] = (counts[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', code, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    table.concat(parts, ", ")))
end
