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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks import alerts, fleet_views, pages, valkey
from benchmarks.common import (
    DAY_MINUTES,
    HEARTBEAT_PATH,
    MINUTE_NS,
    REPO,
    percentile,
    stats_latencies,
    wait_for_line,
    wait_for_port,
)
from benchmarks.load import batch_body, fleet_ids, load
from benchmarks.page import Row, compose, row
from benchmarks.soak_page import soak_section, write_section
from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.http.app import create_app
from fleet_monitor.store.memory import MemoryStore

__all__ = ["REPO", "percentile", "wait_for_line", "wait_for_port"]  # benchmarks.soak uses them


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


INGEST_KINDS = ("ceiling", "floor", "service", "json", "quiet")
INGEST_FLEET = 1000
WARM_UP_SECONDS = 2


def ingest(seconds: int, rounds: int, workdir: Path) -> dict[str, object]:
    """Heartbeat POSTs per second from a fleet: the service (access log on, and at warning
    level) against waitress's ceiling and the framework's floor, alternating; each server is
    warmed up first (its first seconds are slower, whatever it serves)."""
    devices = workdir / "fleet.csv"
    devices.write_text("device_id\n" + "".join(f"{d}\n" for d in fleet_ids(INGEST_FLEET)))
    rates: dict[str, list[float]] = {kind: [] for kind in INGEST_KINDS}
    generator = ""
    for _ in range(rounds):
        for kind in INGEST_KINDS:
            with server(kind, workdir, devices) as url:
                load(url + "/", WARM_UP_SECONDS, 16, workdir, fleet=INGEST_FLEET)
                generator, result = load(url + "/", seconds, 16, workdir, fleet=INGEST_FLEET)
                if result.errors:
                    raise RuntimeError(f"{kind}: {result.errors} failed requests")
                rates[kind].append(result.requests_per_second)
    median = {kind: statistics.median(values) for kind, values in rates.items()}
    figures: dict[str, object] = {"generator": generator}
    figures.update({f"{kind}_rps": round(rate, 1) for kind, rate in median.items()})
    for kind in INGEST_KINDS[1:]:  # each round's ratio to the ceiling measured beside it
        paired = [rate / top for rate, top in zip(rates[kind], rates["ceiling"], strict=True)]
        figures[f"{kind}_ratio"] = round(statistics.median(paired), 3)
        figures[f"{kind}_range"] = f"{min(paired):.2f} to {max(paired):.2f}"
    return figures


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
    with server("preloaded", workdir) as url:
        return stats_latencies(url, requests)


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


def rows(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[Row]:
    """The table's rows for the results present (rows 8a to 8e: :func:`benchmarks.valkey.rows`)."""
    out: list[Row] = []
    if "ingest" in results:
        i = results["ingest"]
        out.append(row(
            "1", f"heartbeat ingest from {INGEST_FLEET:,} devices in turn ({i['generator']}, 16 "
            f"connections, after {WARM_UP_SECONDS} s of warm-up, median of {args.rounds})",
            f"waitress ceiling (a bare WSGI callable): {i['ceiling_rps']} req/s; Flask floor: "
            f"{i['floor_rps']} req/s ({i['floor_ratio']} of it)",
            f"service: {i['service_rps']} req/s with the access log (text lines); "
            f"{i['json_rps']} req/s with JSON lines ({i['json_ratio']}); {i['quiet_rps']} req/s "
            "with the access log at warning level",
            f"{i['service_ratio']} of the ceiling with the access log (rounds "
            f"{i['service_range']}; target ≥ 0.85); {i['quiet_ratio']} without "
            f"({i['quiet_range']}; target ≥ 0.90): medians of each round's ratio",
        ))  # fmt: skip
    if "stats" in results:
        s = results["stats"]
        out.append(row(
            "2", "`GET …/stats` latency, 1 000 000 minutes vs 1",
            f"1 heartbeat: p50 {s['small_p50_ms']} ms, p99 {s['small_p99_ms']} ms",
            f"1M minutes: p50 {s['big_p50_ms']} ms, p99 {s['big_p99_ms']} ms",
            f"p50 {s['p50_ratio']}, p99 {s['p99_ratio']} (target ≤ 1.1)",
        ))  # fmt: skip
    if "memory" in results:
        m = results["memory"]
        out.append(row(
            "3", f"memory, {m['devices']} devices × {m['days']} days per-minute + 100 uploads",
            f"raw bitmap: {m['raw_bitmap_bytes_per_day']} B/day",
            f"{m['bytes_per_device_day']} B per device-day ({m['bytes_per_device']} B per device)",
            f"{m['beyond_200_per_day_bytes']} B per device beyond 200 B/day (target ≤ 1024)",
        ))  # fmt: skip
    if "memory_gappy" in results:
        g = results["memory_gappy"]
        out.append(row(
            "3b", f"the same with {g['missing']:.0%} of minutes missing at random (not the "
            "issue's workload: no chunk is ever full)", "–",
            f"{g['bytes_per_device_day']} B per device-day ({g['bytes_per_device']} B per device)",
            f"{g['beyond_200_per_day_bytes']} B per device beyond 200 B/day",
        ))  # fmt: skip
    if "batch" in results:
        b = results["batch"]
        out.append(row(
            "4", "batch ingestion, `POST /api/v1/events` with "
            f"{b['events_per_request']} heartbeats a request, 4 connections", "–",
            f"{b['service_events_per_s']} events/s in memory; {b['everysec_events_per_s']} "
            "events/s with the journal (everysec)", "–",
        ))  # fmt: skip
    if "durability" in results:
        d = results["durability"]
        out.append(row(
            "6", "heartbeat ingest with `--data-dir` (issue 6), by `--fsync` mode",
            f"memory only: {d['service']} req/s",
            f"`no` {d['no']}, `everysec` {d['everysec']}, `always` {d['always']} req/s", "–",
        ))  # fmt: skip
    if "startup" in results:
        u = results["startup"]
        out.append(row(
            "5", "start-up: process start to listening, and to ready (`/readyz` 200)",
            f"5-device CSV: {u['five_devices_listening_s']} s, ready {u['five_devices_ready_s']} s",
            f"{u['devices']}-device CSV: {u['large_csv_listening_s']} s, ready "
            f"{u['large_csv_ready_s']} s", "target ≤ 1 s to ready",
        ))  # fmt: skip
    if "costly_reads" in results:
        r = results["costly_reads"]
        out.append(row(
            "7", f"heartbeat latency beside {r['readers']} clients reading 10,000-step windows "
            "in a loop (`--read-budget`, issue 12)",
            f"alone: p50 {r['alone_p50_ms']} ms, p99 {r['alone_p99_ms']} ms",
            f"beside them: p50 {r['beside_p50_ms']} ms, p99 {r['beside_p99_ms']} ms; reads "
            f"answered {r['reads_200']}, refused 429 {r['reads_429']}",
            f"p50 {r['p50_ratio']}× (before the read budget: 589 ms)",
        ))  # fmt: skip
    if "scrape" in results:
        c = results["scrape"]
        out.append(row(
            "–", f"`GET /metrics` with {c['devices']} devices (issue 5), median of 5", "–",
            f"{c['default_s']} s ({c['default_bytes']} B); with `--metrics-per-device` "
            f"{c['per_device_s']} s ({c['per_device_bytes']} B)",
            f"fleet lock held {c['fleet_lock_held_ms']} ms per scrape; slowest register+remove "
            f"of another thread during the scrapes: {c['writer_max_ms']} ms "
            f"({c['writer_ops']} done)",
        ))  # fmt: skip
    return (
        out
        + valkey.rows(results)
        + fleet_views.rows(results)
        + pages.rows(results)
        + alerts.rows(results)
    )


def command(args: argparse.Namespace) -> str:
    """The command line that measures what ``args`` ask for, every option that counts shown."""
    words = [".venv/bin/python -m benchmarks.run", f"--seconds {args.seconds}"]
    words.append(f"--rounds {args.rounds}")
    chosen = selected(args.only)
    if "memory" in chosen or "valkey-memory" in chosen:
        words.append(f"--memory-devices {args.memory_devices}")
    if args.only:
        words.append(f"--only {args.only}")
    return " ".join(words)


def markdown(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, previous: str | None = None
) -> str:
    """The page ``benchmarks/results.md`` (without the soak's section): every row for a whole
    run; for a run of some rows (``args.only``), the ``previous`` page with those rows
    replaced."""
    return compose(rows(results, args), measured(args), previous if args.only else None)


def measured(args: argparse.Namespace) -> str:
    """When, on what and with which command the figures of this run were measured."""
    return (
        f"{dt.date.today().isoformat()} on {os.cpu_count()} cores, Python "
        f"{platform.python_version()},\n{platform.system()} {platform.machine()}, with "
        f"`{command(args)}`"
    )


Benchmark = Callable[[argparse.Namespace, Path, "Engine", dict[str, dict[str, Any]]], None]


class Engine:
    """The Valkey engine of rows 8a to 8d (AOF everysec), started when a row first needs it."""

    def __init__(self, workdir: Path, stack: ExitStack) -> None:
        self._workdir, self._stack, self._url = workdir, stack, ""

    @property
    def url(self) -> str:
        if not self._url:
            self._url = self._stack.enter_context(valkey.engine(self._workdir))
        return self._url


def _valkey_memory(
    args: argparse.Namespace, workdir: Path, results: dict[str, dict[str, Any]]
) -> None:
    """Row 8e, beside the memory store's row 3 (measured now unless this run just did)."""
    with valkey.engine(workdir, valkey.NO_PERSISTENCE) as url:
        results["valkey_memory"] = valkey.engine_memory(
            url, args.memory_devices, processes=os.cpu_count() or 1
        )
    reference = results.get("memory")
    if reference is None or reference["devices"] != args.memory_devices:
        reference = memory(args.memory_devices)
    results["valkey_memory_reference"] = reference


# Each group of rows, in the order they run: what --only names.
BENCHMARKS: dict[str, Benchmark] = {
    "ingest": lambda a, w, e, r: r.update(ingest=ingest(a.seconds, a.rounds, w)),
    "stats": lambda a, w, e, r: r.update(stats=stats_latency(a.latency_requests, w)),
    "memory": lambda a, w, e, r: r.update(
        memory=memory(a.memory_devices), memory_gappy=memory(a.memory_devices, missing=0.02)
    ),
    "startup": lambda a, w, e, r: r.update(startup=startup(a.startup_devices, w)),
    "scrape": lambda a, w, e, r: r.update(scrape=scrape(a.scrape_devices)),
    "batch": lambda a, w, e, r: r.update(batch=batch(a.seconds, w)),
    "durability": lambda a, w, e, r: r.update(durability=durability(a.seconds, w)),
    "costly-reads": lambda a, w, e, r: r.update(costly_reads=costly_reads(a.seconds, w)),
    "valkey-ingest": lambda a, w, e, r: r.update(
        valkey_ingest=valkey.ingest(e.url, a.seconds, a.rounds, w)
    ),
    "valkey-workers": lambda a, w, e, r: r.update(
        valkey_workers=valkey.workers(e.url, a.seconds, a.rounds, w)
    ),
    "valkey-batch": lambda a, w, e, r: r.update(
        valkey_batch=valkey.batch(e.url, a.seconds, a.rounds, w)
    ),
    "valkey-stats": lambda a, w, e, r: r.update(
        valkey_stats=valkey.stats_latency(e.url, a.latency_requests, w)
    ),
    "valkey-memory": lambda a, w, e, r: _valkey_memory(a, w, r),
    "outages": lambda a, w, e, r: r.update(outages=fleet_views.outages(w)),
    "group-by": lambda a, w, e, r: r.update(group_by=fleet_views.group_by(w)),
    "pages": lambda a, w, e, r: r.update(pages=pages.status_pages(w)),
    "alerts": lambda a, w, e, r: r.update(alerts=alerts.storm(w)),
}


def selected(only: str | None) -> list[str]:
    """The groups ``--only`` names (comma-separated; ``valkey`` is every ``valkey-`` one), in
    running order; every group without it. Raises ValueError for an unknown name."""
    if not only:
        return list(BENCHMARKS)
    names = set()
    for name in (part.strip() for part in only.split(",")):
        matches = [group for group in BENCHMARKS if group == name or group.startswith(name + "-")]
        if not matches:
            raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        names.update(matches)
    return [group for group in BENCHMARKS if group in names]


def main() -> None:
    """Run the benchmarks and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=10, help="load per ingest round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ingest rounds")
    parser.add_argument("--latency-requests", type=int, default=5000)
    parser.add_argument("--memory-devices", type=int, default=250, help="rows 3, 3b and 8e")
    parser.add_argument("--startup-devices", type=int, default=100_000)
    parser.add_argument("--scrape-devices", type=int, default=100_000)
    parser.add_argument(
        "--only",
        help="run only these (comma-separated; the rows of the others stay as they are in "
        f"--output): {', '.join(BENCHMARKS)}, or valkey for every valkey- one",
    )
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results.md")
    parser.add_argument(
        "--docs",
        type=Path,
        default=REPO / "docs" / "scale-out.md",
        help="the page whose capacity paragraph a run of the valkey rows writes",
    )
    args = parser.parse_args()
    try:
        groups = selected(args.only)
    except ValueError as error:
        parser.error(str(error))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        engine = Engine(workdir, stack)
        for group in groups:
            started = time.perf_counter()
            BENCHMARKS[group](args, workdir, engine, results)
            print(f"{group} done in {time.perf_counter() - started:.0f} s", flush=True)
    for name, figures in results.items():
        print(f"{name:8} {json.dumps(figures)}")
    previous = args.output.read_text() if args.output.exists() else ""
    kept = soak_section(args.output)  # written by benchmarks.soak: kept as it is
    page = markdown(results, args, previous)
    args.output.write_text(page + (f"\n{kept}\n" if kept else ""))
    print(f"wrote {args.output}")
    if {"valkey_ingest", "valkey_workers", "valkey_memory"} <= results.keys():
        text = valkey.capacity_text(results, measured(args).replace("\n", " "))
        write_section(args.docs, text, valkey.CAPACITY_BEGIN, valkey.CAPACITY_END)
        print(f"wrote the capacity paragraph of {args.docs}")


if __name__ == "__main__":
    main()
