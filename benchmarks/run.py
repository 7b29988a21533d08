"""Run every benchmark, print a table, and write ``benchmarks/results.md``.

    .venv/bin/python -m benchmarks.run [--seconds 10] [--rounds 3] [--memory-devices 250]

Each figure is measured in one run beside its reference, alternating rounds, so machine noise
cancels in the ratio. Not part of the unit suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.load import batch_body, load
from benchmarks.soak_page import soak_section
from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.http.app import create_app
from fleet_monitor.store.memory import MemoryStore

REPO = Path(__file__).resolve().parent.parent
HEARTBEAT_PATH = "/api/v1/devices/60-6b-44-84-dc-64/heartbeat"
DAY_MINUTES = 1440
MINUTE_NS = 60 * 10**9


@contextmanager
def server(kind: str, workdir: Path, devices: Path | None = None) -> Iterator[str]:
    """Start ``python -m benchmarks.servers KIND`` on a free port; yield its base URL."""
    log = workdir / f"{kind}.log"
    args = [sys.executable, "-m", "benchmarks.servers", kind, "--port", "0"]
    if devices:
        args += ["--devices", str(devices)]
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=out)
    try:
        yield f"http://127.0.0.1:{wait_for_port(log, process)}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_line(
    log: Path, process: subprocess.Popen[bytes], text: str, timeout: float = 120
) -> str:
    """The first line of a starting server's log that contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if text in line:
                return line
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        time.sleep(0.005)
    raise RuntimeError(f"server did not log {text!r}")


def wait_for_port(log: Path, process: subprocess.Popen[bytes], timeout: float = 120) -> int:
    """The port a starting server logs in its ``listening on`` line, once it is ready."""
    line = wait_for_line(log, process, "listening on http://", timeout)
    wait_for_line(log, process, ": ready", timeout)
    return int(line.rsplit(":", 1)[1].split()[0].strip('",]}'))


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


def ingest(seconds: int, rounds: int, workdir: Path) -> dict[str, object]:
    """Heartbeat POSTs per second: the service against the framework floor, alternating."""
    service: list[float] = []
    floor: list[float] = []
    generator = ""
    for _ in range(rounds):
        for kind, results in (("service", service), ("floor", floor)):
            with server(kind, workdir) as url:
                generator, result = load(url + HEARTBEAT_PATH, seconds, 16, workdir)
                if result.errors:
                    raise RuntimeError(f"{kind}: {result.errors} failed requests")
                results.append(result.requests_per_second)
    service_rps, floor_rps = statistics.median(service), statistics.median(floor)
    return {
        "generator": generator,
        "service_rps": round(service_rps, 1),
        "floor_rps": round(floor_rps, 1),
        "ratio": round(service_rps / floor_rps, 3),
    }


def durability(seconds: int, workdir: Path) -> dict[str, object]:
    """Heartbeat POSTs per second with a journal in each fsync mode, beside memory only."""
    result: dict[str, object] = {}
    for kind in ("service", "no", "everysec", "always"):
        with server(kind, workdir) as url:
            _, figures = load(url + HEARTBEAT_PATH, seconds, 16, workdir)
        result[kind] = round(figures.requests_per_second, 1)
    return result


def batch(seconds: int, workdir: Path, events: int = 1000) -> dict[str, object]:
    """Events per second through ``POST /api/v1/events`` at ``events`` events a request
    (memory only, and with the journal in everysec mode)."""
    body = batch_body(HEARTBEAT_PATH.split("/")[4], events)
    result: dict[str, object] = {"events_per_request": events}
    for kind in ("service", "everysec"):
        with server(kind, workdir) as url:
            _, figures = load(url + "/api/v1/events", seconds, 4, workdir, body)
        result[f"{kind}_events_per_s"] = round(figures.requests_per_second * events)
        result[f"{kind}_errors"] = figures.errors
    return result


def stats_latency(requests: int, workdir: Path) -> dict[str, object]:
    """GET stats latency (ms) for a device with 1 heartbeat vs one with 1 000 000 minutes."""
    latencies: dict[str, list[float]] = {"small": [], "big": []}
    with server("preloaded", workdir) as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port))
        for index in range(2 * requests + 200):
            device = "small" if index % 2 else "big"
            started = time.perf_counter()
            conn.request("GET", f"/api/v1/devices/{device}/stats")
            body = conn.getresponse().read()
            elapsed = (time.perf_counter() - started) * 1000
            if index >= 200:  # warm-up
                latencies[device].append(elapsed)
        assert json.loads(body)["uptime"] > 0
    result: dict[str, object] = {}
    for device, values in latencies.items():
        result[f"{device}_p50_ms"] = round(percentile(values, 50), 3)
        result[f"{device}_p99_ms"] = round(percentile(values, 99), 3)
    result["p50_ratio"] = round(
        percentile(latencies["big"], 50) / percentile(latencies["small"], 50), 3
    )
    result["p99_ratio"] = round(
        percentile(latencies["big"], 99) / percentile(latencies["small"], 99), 3
    )
    return result


def _heartbeat_latencies(url: str, seconds: float, stop: threading.Event) -> list[float]:
    """Heartbeat POST latencies (ms) from one keep-alive connection, one every 5 ms."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    latencies: list[float] = []
    deadline, minute = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        body = json.dumps({"sent_at": f"2024-04-02T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z"})
        started = time.perf_counter()
        conn.request("POST", HEARTBEAT_PATH, body)
        conn.getresponse().read()
        latencies.append((time.perf_counter() - started) * 1000)
        minute += 1
        time.sleep(0.005)
    stop.set()
    return latencies


def _read_loop(url: str, query: str, stop: threading.Event, statuses: Counter[int]) -> None:
    """GET ``query`` again and again, without waiting, until ``stop``; count the statuses."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    while not stop.is_set():
        conn.request("GET", query)
        response = conn.getresponse()
        response.read()
        statuses[response.status] += 1


def costly_reads(seconds: int, workdir: Path, readers: int = 16) -> dict[str, object]:
    """Heartbeat latency alone, then beside ``readers`` clients reading 10,000-step 1-day
    windows in a loop without waiting (the worst client: it ignores Retry-After)."""
    query = (
        "/api/v1/devices/60-6b-44-84-dc-64/uptime"
        "?start=1997-01-01T00:00:00Z&end=2024-05-19T00:00:00Z&step=1d"
    )
    result: dict[str, object] = {"readers": readers}
    for phase, count in (("alone", 0), ("beside", readers)):
        with server("service", workdir) as url:
            stop, statuses = threading.Event(), Counter[int]()
            threads = [
                threading.Thread(target=_read_loop, args=(url, query, stop, statuses))
                for _ in range(count)
            ]
            for thread in threads:
                thread.start()
            latencies = _heartbeat_latencies(url, seconds, stop)
            for thread in threads:
                thread.join()
        result[f"{phase}_p50_ms"] = round(percentile(latencies, 50), 2)
        result[f"{phase}_p99_ms"] = round(percentile(latencies, 99), 2)
        if count:
            result["reads_200"], result["reads_429"] = statuses[200], statuses[429]
    result["p50_ratio"] = round(float(result["beside_p50_ms"]) / float(result["alone_p50_ms"]), 1)  # type: ignore[arg-type]
    return result


def memory(
    devices: int, days: int = 30, uploads: int = 100, missing: float = 0.0
) -> dict[str, object]:
    """tracemalloc bytes for ``devices`` devices with a heartbeat every minute for ``days``
    days (less a random ``missing`` share of minutes) and ``uploads`` uploads each (at distinct
    minutes), through the real record methods."""
    rng = random.Random(1)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ids = [f"dev-{n:05d}" for n in range(devices)]
    store = MemoryStore(ids)
    start = 28_000_000
    for device_id in ids:
        for minute in range(start, start + days * DAY_MINUTES):
            if not missing or rng.random() >= missing:
                store.record(device_id, Heartbeat(minute * MINUTE_NS), None)
        for n in range(uploads):
            store.record(device_id, Upload((start + n * 431) * MINUTE_NS, 30 * 10**9 + n), None)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_device = used / devices
    bitmap_bytes_per_day = DAY_MINUTES / 8
    return {
        "devices": devices,
        "days": days,
        "missing": missing,
        "bytes_per_device": round(per_device),
        "bytes_per_device_day": round(per_device / days, 1),
        "raw_bitmap_bytes_per_day": bitmap_bytes_per_day,
        "beyond_200_per_day_bytes": round(per_device - 200 * days),
    }


def startup(devices: int, workdir: Path) -> dict[str, object]:
    """Seconds from process start to listening and to ready, with a ``devices``-line CSV and
    with the 5-device sample (medians of 3)."""
    csv = workdir / "big.csv"
    csv.write_text("device_id\n" + "".join(f"dev-{n:06d}\n" for n in range(devices)))
    result: dict[str, object] = {"devices": devices}
    for name, path in (("five_devices", REPO / "devices.csv"), ("large_csv", csv)):
        listening, ready = [], []
        for _ in range(3):
            log = workdir / "startup.log"
            started = time.perf_counter()
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "fleet_monitor", "serve", "--port", "0",
                     "--devices", str(path), "--log-format", "text"],
                    cwd=REPO, stdout=out, stderr=out,
                )  # fmt: skip
            wait_for_line(log, process, "listening on http://")
            listening.append(time.perf_counter() - started)
            wait_for_line(log, process, ": ready")
            ready.append(time.perf_counter() - started)
            process.terminate()
            process.wait(timeout=30)
        result[f"{name}_listening_s"] = round(statistics.median(listening), 3)
        result[f"{name}_ready_s"] = round(statistics.median(ready), 3)
    return result


def scrape(devices: int, scrapes: int = 5) -> dict[str, object]:
    """``GET /metrics`` over ``devices`` devices (10 heartbeat minutes and 2 uploads each):
    seconds per scrape with and without per-device series, how long the fleet lock is held
    per scrape, and the slowest fleet-lock operation of another thread during the scrapes."""
    ids = [f"dev-{n:06d}" for n in range(devices)]
    store = MemoryStore(ids)
    for device_id in ids:
        for minute in range(28_000_000, 28_000_010):
            store.record(device_id, Heartbeat(minute * MINUTE_NS), None)
        store.record(device_id, Upload(28_000_000 * MINUTE_NS, 10**9), None)
        store.record(device_id, Upload(28_000_001 * MINUTE_NS, 2 * 10**9), None)
    result: dict[str, object] = {"devices": devices}
    waits: list[float] = []
    running = threading.Event()

    def writer() -> None:  # registers and removes a device: both take the fleet lock
        while running.is_set():
            started = time.perf_counter()
            store.register("cam-07")
            store.remove("cam-07")
            waits.append(time.perf_counter() - started)
            time.sleep(0.001)

    for per_device in (False, True):
        client = create_app(Settings(metrics_per_device=per_device), store).test_client()
        running.set()
        thread = threading.Thread(target=writer)
        thread.start()
        times, size = [], 0
        for _ in range(scrapes):
            started = time.perf_counter()
            size = len(client.get("/metrics").get_data())
            times.append(time.perf_counter() - started)
        running.clear()
        thread.join()
        key = "per_device" if per_device else "default"
        result[f"{key}_s"] = round(statistics.median(times), 3)
        result[f"{key}_bytes"] = size
    held = []
    for _ in range(scrapes):
        started = time.perf_counter()
        with store._lock:  # what a scrape holds it for: the copy of the record list
            list(store._devices.items())
        held.append(time.perf_counter() - started)
    result["fleet_lock_held_ms"] = round(statistics.median(held) * 1000, 2)
    result["writer_max_ms"] = round(max(waits) * 1000, 2)
    result["writer_ops"] = len(waits)
    return result


def markdown(results: dict[str, dict[str, object]], args: argparse.Namespace) -> str:
    """The results as the Markdown page ``benchmarks/results.md``."""
    i, s, m, u = results["ingest"], results["stats"], results["memory"], results["startup"]
    c, g = results["scrape"], results["memory_gappy"]
    b, d, r = results["batch"], results["durability"], results["costly_reads"]
    return f"""# Benchmark results

Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores, Python {platform.python_version()},
{platform.system()} {platform.machine()}, with `.venv/bin/python -m benchmarks.run --seconds {args.seconds} --rounds {args.rounds} --memory-devices {args.memory_devices}`.

| # | what | reference | figure | ratio / target |
|---|---|---|---|---|
| 1 | heartbeat ingest ({i["generator"]}, 16 connections, median of {args.rounds}) | floor app: {i["floor_rps"]} req/s | service: {i["service_rps"]} req/s | {i["ratio"]} of the floor (target ≥ 0.90) |
| 2 | `GET …/stats` latency, 1 000 000 minutes vs 1 | 1 heartbeat: p50 {s["small_p50_ms"]} ms, p99 {s["small_p99_ms"]} ms | 1M minutes: p50 {s["big_p50_ms"]} ms, p99 {s["big_p99_ms"]} ms | p50 {s["p50_ratio"]}, p99 {s["p99_ratio"]} (target ≤ 1.1) |
| 3 | memory, {m["devices"]} devices × {m["days"]} days per-minute + 100 uploads | raw bitmap: {m["raw_bitmap_bytes_per_day"]} B/day | {m["bytes_per_device_day"]} B per device-day ({m["bytes_per_device"]} B per device) | {m["beyond_200_per_day_bytes"]} B per device beyond 200 B/day (target ≤ 1024) |
| 3b | the same with {g["missing"]:.0%} of minutes missing at random (not the issue's workload: no chunk is ever full) | – | {g["bytes_per_device_day"]} B per device-day ({g["bytes_per_device"]} B per device) | {g["beyond_200_per_day_bytes"]} B per device beyond 200 B/day |
| 4 | batch ingestion, `POST /api/v1/events` with {b["events_per_request"]} heartbeats a request, 4 connections | – | {b["service_events_per_s"]} events/s in memory; {b["everysec_events_per_s"]} events/s with the journal (everysec) | – |
| 6 | heartbeat ingest with `--data-dir` (issue 6), by `--fsync` mode | memory only: {d["service"]} req/s | `no` {d["no"]}, `everysec` {d["everysec"]}, `always` {d["always"]} req/s | – |
| 5 | start-up: process start to listening, and to ready (`/readyz` 200) | 5-device CSV: {u["five_devices_listening_s"]} s, ready {u["five_devices_ready_s"]} s | {u["devices"]}-device CSV: {u["large_csv_listening_s"]} s, ready {u["large_csv_ready_s"]} s | target ≤ 1 s to ready |
| 7 | heartbeat latency beside {r["readers"]} clients reading 10,000-step windows in a loop (`--read-budget`, issue 12) | alone: p50 {r["alone_p50_ms"]} ms, p99 {r["alone_p99_ms"]} ms | beside them: p50 {r["beside_p50_ms"]} ms, p99 {r["beside_p99_ms"]} ms; reads answered {r["reads_200"]}, refused 429 {r["reads_429"]} | p50 {r["p50_ratio"]}× (before the read budget: 589 ms) |
| – | `GET /metrics` with {c["devices"]} devices (issue 5), median of 5 | – | {c["default_s"]} s ({c["default_bytes"]} B); with `--metrics-per-device` {c["per_device_s"]} s ({c["per_device_bytes"]} B) | fleet lock held {c["fleet_lock_held_ms"]} ms per scrape; slowest register+remove of another thread during the scrapes: {c["writer_max_ms"]} ms ({c["writer_ops"]} done) |
"""


def main() -> None:
    """Run the benchmarks and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="load per ingest round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ingest rounds")
    parser.add_argument("--latency-requests", type=int, default=5000)
    parser.add_argument("--memory-devices", type=int, default=250)
    parser.add_argument("--startup-devices", type=int, default=100_000)
    parser.add_argument("--scrape-devices", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results = {
            "ingest": ingest(args.seconds, args.rounds, workdir),
            "stats": stats_latency(args.latency_requests, workdir),
            "memory": memory(args.memory_devices),
            "memory_gappy": memory(args.memory_devices, missing=0.02),
            "startup": startup(args.startup_devices, workdir),
            "scrape": scrape(args.scrape_devices),
            "batch": batch(args.seconds, workdir),
            "durability": durability(args.seconds, workdir),
            "costly_reads": costly_reads(args.seconds, workdir),
        }
    for name, figures in results.items():
        print(f"{name:8} {json.dumps(figures)}")
    kept = soak_section(args.output)  # written by benchmarks.soak: kept as it is
    args.output.write_text(markdown(results, args) + (f"\n{kept}\n" if kept else ""))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
