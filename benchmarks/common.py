"""What the benchmark's modules share: paths, constants, waiting for a server, percentiles."""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEARTBEAT_PATH = "/api/v1/devices/60-6b-44-84-dc-64/heartbeat"
DAY_MINUTES = 1440
MINUTE_NS = 60 * 10**9


def wait_for_line(
    log: Path,
    process: subprocess.Popen[bytes],
    text: str | tuple[str, ...],
    timeout: float = 120,
    count: int = 1,
) -> str:
    """The first line of a starting server's log that contains ``text`` (or one of them),
    once ``count`` lines contain it."""
    texts = (text,) if isinstance(text, str) else text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [line for line in log.read_text().splitlines() if any(t in line for t in texts)]
        if len(found) >= count:
            return found[0]
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        time.sleep(0.005)
    raise RuntimeError(f"server did not log {text!r} {count} time(s)")


READY_LINE = (": ready", '"msg": "ready"')  # in a text line, in a JSON line


def port_of(line: str) -> int:
    """The port in a ``listening on http://host:port`` log line (text or JSON, and the
    supervisor's ``… with N workers``)."""
    return int(line.rsplit(":", 1)[1].split(maxsplit=1)[0].strip('",]}'))


def wait_for_port(
    log: Path, process: subprocess.Popen[bytes], timeout: float = 120, ready: int = 1
) -> int:
    """The port a starting server logs in its ``listening on`` line, once it is ready (``ready``
    processes have logged that they are: each worker of ``serve --workers N`` does)."""
    line = wait_for_line(log, process, "listening on http://", timeout)
    wait_for_line(log, process, READY_LINE, timeout, count=ready)
    return port_of(line)


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


def stats_latencies(url: str, requests: int) -> dict[str, object]:
    """``GET …/stats`` latency (ms) from one keep-alive connection to ``url``, alternating
    device ``small`` (1 heartbeat) and device ``big`` (1,000,000 minutes), after 200 warm-up
    requests: each one's p50 and p99, and big's over small's."""
    latencies: dict[str, list[float]] = {"small": [], "big": []}
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    for index in range(2 * requests + 200):
        device = "small" if index % 2 else "big"
        started = time.perf_counter()
        conn.request("GET", f"/api/v1/devices/{device}/stats")
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET stats: {response.status} {body!r}")
        if index >= 200:  # warm-up
            latencies[device].append(elapsed)
    conn.close()
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


@contextmanager
def serve(
    workdir: Path,
    store: str | None = None,
    workers: int = 1,
    devices: Path | None = None,
    extra: Sequence[str] = (),
) -> Iterator[str]:
    """``python -m fleet_monitor serve`` (text log, access log included, as row 1's service)
    on a free port, with ``--store`` and ``--workers`` when given; its base URL once every
    worker is ready."""
    args = [sys.executable, "-m", "fleet_monitor", "serve", "--port", "0", "--log-format", "text"]
    if store is not None:
        args += ["--store", store]
    if workers > 1:
        args += ["--workers", str(workers)]
    if devices is not None:
        args += ["--devices", str(devices)]
    args += list(extra)
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=out)
    try:
        line = wait_for_line(log, process, "listening on http://")
        wait_for_line(log, process, ": ready", count=workers)
        yield f"http://127.0.0.1:{port_of(line)}"
    finally:
        process.terminate()
        process.wait(timeout=30)
