"""Soak: mixed load on a slow disk with a snapshot every second, then kill -9 and restart.

    .venv/bin/python -m benchmarks.soak [--seconds 60] [--threads 8] [--fsync always,everysec]

For each fsync mode: start ``python -m tests.support.slow_fsync serve`` (every fsync 20 to 50 ms)
with ``--data-dir`` and ``--snapshot-every 1``; for ``--seconds``, each thread sends its own
device's heartbeats (single and in batches of 10), upload stats, and reads (stats, store,
device list); then kill -9 the server mid-load, restart it and count the acknowledged writes
it lost. Reports requests, 5xx answers (must be 0), lost acknowledged writes (must be 0) and
the longest stall (the slowest single request), and writes them into the soak section of
``benchmarks/results.md`` (the rest of that page is left as it is). Not part of the unit suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from benchmarks.run import REPO, percentile, wait_for_port
from benchmarks.soak_page import section, write_section

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
WINDOW_MINUTES = 10_000  # the most 1-minute steps one uptime query may span
BATCH = 10  # heartbeats in one batch request


def sent_at(minute: int) -> str:
    """RFC 3339 time ``minute`` minutes after 2024-01-01T00:00:00Z."""
    return (EPOCH + dt.timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tally:
    """What the load saw; each thread writes only its own device's entries."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by request kind
    unanswered: int = 0
    beats: dict[str, set[int]] = field(default_factory=dict)  # acknowledged minutes
    uploads: dict[str, int] = field(default_factory=dict)  # acknowledged uploads
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, kind: str, status: int, seconds: float) -> None:
        """Count one answer to a request of ``kind``."""
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies.setdefault(kind, []).append(seconds)


def one_request(
    session: requests.Session, tally: Tally, kind: str, url: str, body: object = None
) -> requests.Response | None:
    """Send one request of ``kind`` (a POST with ``body``, else a GET) and count its answer;
    None when it got none."""
    started = time.perf_counter()
    try:
        method = "GET" if body is None else "POST"
        response = session.request(method, url, json=body, timeout=60)
    except requests.RequestException:
        if not tally.killed.is_set():
            with tally.lock:
                tally.unanswered += 1
        return None
    tally.answered(kind, response.status_code, time.perf_counter() - started)
    return response


@dataclass
class Device:
    """One load thread's device: its URL, next minute and random choices."""

    url: str
    device_id: str
    rng: random.Random
    session: requests.Session = field(default_factory=requests.Session)
    minute: int = 0

    def beat(self, tally: Tally) -> None:
        """POST a heartbeat of the next minute."""
        body = {"sent_at": sent_at(self.minute)}
        path = f"{self.url}/api/v1/devices/{self.device_id}/heartbeat"
        response = one_request(self.session, tally, "heartbeat", path, body)
        if response is not None and response.status_code == 204:
            tally.beats[self.device_id].add(self.minute)
        self.minute += 1

    def upload(self, tally: Tally) -> None:
        """POST one upload's stats."""
        body = {"sent_at": sent_at(self.minute), "upload_time": self.rng.randrange(10**9, 10**11)}
        path = f"{self.url}/api/v1/devices/{self.device_id}/stats"
        response = one_request(self.session, tally, "upload", path, body)
        if response is not None and response.status_code == 204:
            tally.uploads[self.device_id] = tally.uploads.get(self.device_id, 0) + 1

    def batch(self, tally: Tally) -> None:
        """POST a batch of heartbeats of the next minutes."""
        minutes = range(self.minute, self.minute + BATCH)
        events = [
            {"device_id": self.device_id, "type": "heartbeat", "sent_at": sent_at(minute)}
            for minute in minutes
        ]
        path = f"{self.url}/api/v1/events"
        response = one_request(self.session, tally, "batch", path, {"events": events})
        if response is not None and response.status_code == 200:
            refused = {item["index"] for item in response.json()["rejected"]}
            accepted = (m for n, m in enumerate(minutes) if n not in refused)
            tally.beats[self.device_id].update(accepted)
        self.minute += BATCH

    def read(self, tally: Tally, devices: Sequence[str]) -> None:
        """GET a device's stats, the fleet summary or a page of devices."""
        paths = [
            f"/api/v1/devices/{self.rng.choice(devices)}/stats",
            "/api/v1/fleet",
            "/api/v1/devices?limit=10",
        ]
        one_request(self.session, tally, "read", self.url + self.rng.choice(paths))


def worker(url: str, device_id: str, devices: Sequence[str], tally: Tally, seed: int) -> None:
    """Mixed traffic for one device until the server is killed: 60 % heartbeats, 10 %
    uploads, 10 % batches, 20 % reads."""
    device = Device(url, device_id, random.Random(seed))
    tally.beats.setdefault(device_id, set())
    while not tally.killed.is_set():
        pick = device.rng.random()
        if pick < 0.6:
            device.beat(tally)
        elif pick < 0.7:
            device.upload(tally)
        elif pick < 0.8:
            device.batch(tally)
        else:
            device.read(tally, devices)


@contextmanager
def server(
    command: Sequence[str], args: Sequence[str], log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the service; yield its URL and process; SIGTERM it afterwards if still running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", "0", "--log-format", "text", *args],
            cwd=REPO,
            stdout=out,
            stderr=out,
        )
    try:
        yield f"http://127.0.0.1:{wait_for_port(log, process)}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def stored_minutes(url: str, device_id: str, last: int) -> set[int]:
    """The minutes up to ``last`` the server holds a heartbeat of ``device_id`` for."""
    found: set[int] = set()
    for start in range(0, last + 1, WINDOW_MINUTES):
        end = sent_at(start + WINDOW_MINUTES)
        params = {"start": sent_at(start), "end": end, "step": "1m"}
        path = f"{url}/api/v1/devices/{device_id}/uptime"
        buckets = requests.get(path, params=params, timeout=60).json()["buckets"]
        found.update(
            start + n for n, bucket in enumerate(buckets) if bucket["minutes_with_heartbeat"]
        )
    return found


def lost_writes(url: str, tally: Tally) -> int:
    """How many acknowledged heartbeats and uploads the restarted server does not hold."""
    lost = 0
    for device_id, minutes in tally.beats.items():
        lost += len(minutes - stored_minutes(url, device_id, max(minutes, default=0)))
        detail = requests.get(f"{url}/api/v1/devices/{device_id}", timeout=60).json()
        lost += max(0, tally.uploads.get(device_id, 0) - detail["upload_count"])
    return lost


def load_then_kill(
    url: str, process: subprocess.Popen[bytes], devices: list[str], seconds: float
) -> Tally:
    """Run the mixed load for ``seconds``, then kill -9 the server mid-load."""
    tally = Tally()
    threads = [
        threading.Thread(target=worker, args=(url, device_id, devices, tally, n))
        for n, device_id in enumerate(devices)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    tally.killed.set()
    process.kill()
    process.wait(timeout=60)
    for thread in threads:
        thread.join()
    return tally


def soak(fsync: str, seconds: float, threads: int, workdir: Path) -> dict[str, object]:
    """One mode's run: load, kill -9, restart, verify."""
    devices = [f"soak-{n:02d}" for n in range(threads)]
    csv = workdir / "devices.csv"
    csv.write_text("device_id\n" + "".join(f"{d}\n" for d in devices))
    state = ["--devices", str(csv), "--data-dir", str(workdir / f"state-{fsync}")]
    slow = [sys.executable, "-m", "tests.support.slow_fsync", "serve"]
    log = workdir / f"soak-{fsync}.log"
    args = [*state, "--fsync", fsync, "--snapshot-every", "1"]
    with server(slow, args, log) as (url, process):
        tally = load_then_kill(url, process, devices, seconds)
    restart_log = workdir / f"restart-{fsync}.log"
    plain = [sys.executable, "-m", "fleet_monitor", "serve"]
    with server(plain, [*state, "--snapshot-every", "0"], restart_log) as (url, _):
        lost = lost_writes(url, tally)
    [loaded] = [line for line in restart_log.read_text().splitlines() if "replayed" in line]
    every = [seconds for kind in tally.latencies.values() for seconds in kind]
    return {
        "fsync": fsync,
        "seconds": seconds,
        "requests": sum(tally.statuses.values()),
        "errors_5xx": sum(n for status, n in tally.statuses.items() if status >= 500),
        "other_non_2xx": sum(n for status, n in tally.statuses.items() if 300 <= status < 500),
        "unanswered": tally.unanswered,
        "acked_heartbeats": sum(len(minutes) for minutes in tally.beats.values()),
        "acked_uploads": sum(tally.uploads.values()),
        "lost_acked_writes": lost,
        "longest_stall_s": round(max(every, default=0.0), 3),
        "p99_ms": round(percentile(every, 99) * 1000, 1) if every else 0.0,
        "longest_by_kind_s": {k: round(max(v), 3) for k, v in sorted(tally.latencies.items())},
        "snapshots": log.read_text().count("snapshot of "),
        "restart": loaded.split(": ", 1)[1],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; exit 1 if any request got a 5xx or an acknowledged write was lost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="load per fsync mode")
    parser.add_argument("--threads", type=int, default=8, help="devices, one thread each")
    parser.add_argument("--fsync", default="always,everysec", help="modes, comma-separated")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results.md")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.fsync.split(","):
            results.append(soak(mode, args.seconds, args.threads, Path(tmp)))
            print(" ".join(f"{key}={value}" for key, value in results[-1].items()), flush=True)
    write_section(args.output, section(results, args, BATCH))
    print(f"wrote the soak section of {args.output}")
    failed = any(r["errors_5xx"] or r["lost_acked_writes"] or r["unanswered"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
