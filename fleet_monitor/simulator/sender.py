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

from fleet_monitor.domain.tokens import TokenBucket
from fleet_monitor.simulator.scenarios import Event

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0


class SharedRate:
    """One :class:`TokenBucket` shared by all workers: ``rate`` requests a second, at most
    ``capacity`` saved up. A caller that finds no token reserves the next one and sleeps until
    it is due, so in any one-second window at most ``rate + capacity`` calls pass."""

    def __init__(
        self,
        rate: float,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._bucket = TokenBucket(rate, capacity, clock())
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, waiting for it if the bucket is empty."""
        with self._lock:
            wait = self._bucket.reserve(self._clock())
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
        self._bucket = SharedRate(options.rate, options.burst) if options.rate else None
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
