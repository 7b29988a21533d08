"""``fleet-monitor simulate``: send a scenario to any server that speaks the API, then judge it.

Sending uses bounded concurrency, an optional shared token bucket, keep-alive sessions, and
retries (connection errors, 429, 5xx) with exponential backoff and full jitter that honour
``Retry-After``. Uploads carry an ``Idempotency-Key``, so a retry of a request whose answer was
lost is not counted twice; heartbeats are idempotent by minute anyway.
"""

from __future__ import annotations

import logging
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from tqdm import tqdm

from fleet_monitor.scenario import Event, Expected

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up; shared by all workers.

    A caller that finds no token reserves the next one and sleeps until it is due, so in any
    one-second window at most ``rate + capacity`` calls pass.
    """

    def __init__(
        self,
        rate: float,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rate, self._capacity = rate, float(capacity)
        self._tokens, self._stamp = float(capacity), clock()
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, waiting for it if the bucket is empty."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


def retry_delay(response: requests.Response | None, attempt: int, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``Retry-After`` if the server gave
    one, else full jitter over an exponential ceiling."""
    header = response.headers.get("Retry-After") if response is not None else None
    if header:
        if header.strip().isdigit():
            return float(header.strip())
        try:
            return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


@dataclass
class Totals:
    """What the sending cost: counts, failures by status, latencies (seconds)."""

    requests: int = 0
    attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def retries(self) -> int:
        """Attempts beyond the first of each request."""
        return self.attempts - self.requests

    def percentile_ms(self, percent: float) -> float | None:
        """Nearest-rank percentile of the request latencies, in milliseconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)] * 1000


@dataclass(frozen=True)
class SendOptions:
    """How to send: where, how many at once, how fast, how patiently."""

    url: str
    concurrency: int = 8
    rate: float | None = None
    burst: int = 10
    timeout: float = 10.0
    retries: int = 5
    seed: int = 1


class Sender:
    """Sends requests with retries, rate limit and a session per thread, counting everything."""

    def __init__(self, options: SendOptions) -> None:
        self.options = options
        self.totals = Totals()
        self._bucket = TokenBucket(options.rate, options.burst) if options.rate else None
        self._local = threading.local()
        self._rng = random.Random(options.seed)
        self._rng_lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _delay(self, response: requests.Response | None, attempt: int) -> float:
        with self._rng_lock:
            return retry_delay(response, attempt, self._rng)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> requests.Response | None:
        """Send one request, retrying as configured; the last response, or None if none came."""
        response: requests.Response | None = None
        attempts = 0
        started = time.perf_counter()
        for attempt in range(self.options.retries + 1):
            if self._bucket is not None:
                self._bucket.acquire()
            attempts += 1
            started = time.perf_counter()
            try:
                response = self._session().request(
                    method,
                    self.options.url + path,
                    json=body,
                    headers=headers,
                    timeout=self.options.timeout,
                )
            except requests.RequestException:
                response = None
            if response is not None and response.status_code not in RETRY_STATUSES:
                break
            if attempt < self.options.retries:
                time.sleep(self._delay(response, attempt))
        latency = time.perf_counter() - started
        with self.totals.lock:
            self.totals.requests += 1
            self.totals.attempts += attempts
            self.totals.latencies.append(latency)
            if response is None:
                self.totals.errors["connection"] += 1
            elif response.status_code >= 400:
                self.totals.errors[str(response.status_code)] += 1
        return response


@contextmanager
def progress(total: int) -> Iterator[Callable[[], None]]:
    """A tick function: a tqdm bar on a terminal, else a log line every 10 %."""
    if sys.stderr.isatty():
        with tqdm(total=total, unit="req", file=sys.stderr) as bar:
            lock = threading.Lock()

            def tick_bar() -> None:
                with lock:
                    bar.update(1)

            yield tick_bar
        return
    done = 0
    lock = threading.Lock()
    step = max(1, total // 10)

    def tick_log() -> None:
        nonlocal done
        with lock:
            done += 1
            if done % step == 0 or done == total:
                log.info("sent %d of %d events", done, total)

    yield tick_log


def send_lanes(sender: Sender, lanes: Sequence[Sequence[Event]], workers: int) -> None:
    """Send each lane's events in order, ``workers`` lanes at a time."""
    run_id = uuid.uuid4().hex[:12]  # a re-run adds to the same devices, as the closed one does
    total = sum(len(lane) for lane in lanes)
    with progress(total) as tick:

        def run_lane(lane_index: int) -> None:
            for index, event in enumerate(lanes[lane_index]):
                headers = None
                if event.kind == "upload":
                    headers = {"Idempotency-Key": f"sim-{run_id}-{lane_index}-{index}"}
                sender.request("POST", event.path(), event.body(), headers)
                tick()

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(run_lane, range(len(lanes))))


def split_lanes(events: Sequence[Event], count: int, by_device: bool) -> list[list[Event]]:
    """Lanes to send in parallel: one a device (in order), or ``count`` round-robin lanes."""
    lanes: dict[Any, list[Event]] = {}
    for index, event in enumerate(events):
        lanes.setdefault(event.device_id if by_device else index % count, []).append(event)
    return list(lanes.values())


@dataclass(frozen=True)
class DeviceResult:
    """Expected against actual for one device."""

    device_id: str
    expected: Expected
    actual: Expected | None
    error: str | None

    @property
    def uptime_matches(self) -> bool:
        """Equal to 5 decimals, as clients compare."""
        return self.actual is not None and (
            f"{self.actual.uptime:.5f}" == f"{self.expected.uptime:.5f}"
        )

    @property
    def avg_matches(self) -> bool:
        """The Go duration strings are identical."""
        return (
            self.actual is not None and self.actual.avg_upload_time == self.expected.avg_upload_time
        )

    @property
    def matches(self) -> bool:
        """Both figures match."""
        return self.uptime_matches and self.avg_matches


def fetch_actual(sender: Sender, device_id: str, expected: Expected) -> DeviceResult:
    """GET the device's stats and pair them with what was expected."""
    response = sender.request("GET", f"/api/v1/devices/{device_id}/stats")
    if response is None:
        return DeviceResult(device_id, expected, None, "no response")
    if response.status_code != 200:
        return DeviceResult(device_id, expected, None, f"HTTP {response.status_code}")
    try:
        body = response.json()
        actual = Expected(float(body["uptime"]), str(body["avg_upload_time"]))
    except (ValueError, KeyError, TypeError):
        return DeviceResult(device_id, expected, None, "malformed stats body")
    return DeviceResult(device_id, expected, actual, None)


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def render_text(results: Sequence[DeviceResult], totals: Totals, wall_s: float) -> str:
    """The report: per device, Expected vs Actual, then the totals."""
    lines = []
    for result in results:
        expected, actual = result.expected, result.actual
        uptime = f"{actual.uptime:.5f}" if actual else result.error
        avg = actual.avg_upload_time if actual else result.error
        lines += [
            f"DeviceID: {result.device_id}",
            f"    Uptime:        Expected: {expected.uptime:.5f}  Actual: {uptime}"
            f"  {_mark(result.uptime_matches)}",
            f"    AvgUploadTime: Expected: {expected.avg_upload_time}  Actual: {avg}"
            f"  {_mark(result.avg_matches)}",
            "",
        ]
    matched = sum(r.matches for r in results)
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(totals.errors.items())) or "none"
    p50, p95, p99 = (totals.percentile_ms(p) for p in (50, 95, 99))
    latency = (
        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms" if p50 and p95 and p99 else "-"
    )
    rate = totals.requests / wall_s if wall_s > 0 else 0.0
    lines += [
        f"Devices:   {matched} of {len(results)} match",
        f"Requests:  {totals.requests} ({totals.retries} retries)",
        f"Errors:    {errors}",
        f"Wall time: {wall_s:.3f} s ({rate:.1f} requests/s)",
        f"Latency:   {latency}",
    ]
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[DeviceResult], totals: Totals, wall_s: float) -> dict[str, Any]:
    """The same report as a JSON-ready dict."""

    def figures(value: Expected | None) -> dict[str, Any] | None:
        return (
            None
            if value is None
            else {
                "uptime": value.uptime,
                "avg_upload_time": value.avg_upload_time,
            }
        )

    return {
        "match": all(r.matches for r in results),
        "devices": [
            {
                "device_id": r.device_id,
                "expected": figures(r.expected),
                "actual": figures(r.actual),
                "error": r.error,
                "uptime_match": r.uptime_matches,
                "avg_upload_time_match": r.avg_matches,
                "match": r.matches,
            }
            for r in results
        ],
        "totals": {
            "requests": totals.requests,
            "attempts": totals.attempts,
            "retries": totals.retries,
            "errors": dict(sorted(totals.errors.items())),
            "wall_seconds": round(wall_s, 6),
            "requests_per_second": round(totals.requests / wall_s, 3) if wall_s > 0 else None,
            "latency_ms": {f"p{p}": totals.percentile_ms(p) for p in (50, 95, 99)},
        },
    }
