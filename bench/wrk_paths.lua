-- wrk script for bench/read_api.py: requests the paths listed (one a line) in the file
-- named by WRK_PATHS in turn, with the Authorization header from WRK_AUTHORIZATION, and prints one JSON
-- line of results when done. Latencies are in microseconds.

local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do
  paths[#paths + 1] = line
end
local headers = { ["Authorization"] = os.getenv("WRK_AUTHORIZATION") }
local counter = 0

request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1], headers)
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "non2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration / 1e6, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max
  ))
end
