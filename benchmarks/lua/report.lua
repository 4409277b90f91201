-- Appended to every wrk script by benchmarks/harness.py: print the run's figures as one JSON line.
-- Latencies are in microseconds; "status" counts responses with status >= 400 (wrk's definition).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '@@BENCH {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,' ..
    '"status":%.0f,"timeout":%.0f,"mean_us":%.1f,"max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"p999_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
