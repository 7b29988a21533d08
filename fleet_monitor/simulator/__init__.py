"""``fleet-monitor simulate``: scenarios (what a fleet sends and what a correct server then
reports), the sender (concurrency, rate, retries, keys) and the report."""
