"""Heartbeat traffic for the real-process durability tests: send, record what was acknowledged,
and read back what a server stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import requests

START = "2024-04-02T00:00:00Z"
MAX_MINUTES = 10_000  # the most 1-minute steps one uptime query may span


def sent_at(minute: int) -> str:
    """The RFC 3339 time of ``minute`` minutes after :data:`START` (under 10 000)."""
    hours, minutes = divmod(minute, 60)
    days, hours = divmod(hours, 24)
    return f"2024-04-{2 + days:02d}T{hours:02d}:{minutes:02d}:00Z"


@dataclass
class Traffic:
    """What one run of :func:`drive` saw: acknowledged heartbeats, other answers and
    requests that got no answer at all (timeouts, resets)."""

    acked: set[tuple[str, int]] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)
    longest_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, device: str, minute: int, status: int, elapsed: float) -> None:
        """Count one answer."""
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.longest_s = max(self.longest_s, elapsed)
            if status == 204:
                self.acked.add((device, minute))


def drive(url: str, devices: Iterable[str], seconds: float, timeout: float = 20.0) -> Traffic:
    """One thread per device POSTs a heartbeat of each next minute for ``seconds``."""
    traffic = Traffic()
    deadline = time.monotonic() + seconds

    def sender(device: str) -> None:
        session = requests.Session()
        for minute in range(MAX_MINUTES):
            if time.monotonic() >= deadline:
                return
            started = time.monotonic()
            try:
                response = session.post(
                    f"{url}/api/v1/devices/{device}/heartbeat",
                    json={"sent_at": sent_at(minute)},
                    timeout=timeout,
                )
            except requests.RequestException as error:
                with traffic.lock:
                    traffic.unanswered.append(f"{device} minute {minute}: {error!r}")
                return
            traffic.note(device, minute, response.status_code, time.monotonic() - started)

    threads = [threading.Thread(target=sender, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return traffic


def stored(url: str, devices: Iterable[str], minutes: int = MAX_MINUTES) -> set[tuple[str, int]]:
    """Every (device, minute) the server holds a heartbeat for, from the 1-minute series."""
    found = set()
    for device in devices:
        response = requests.get(
            f"{url}/api/v1/devices/{device}/uptime",
            params={"start": START, "end": sent_at(minutes), "step": "1m"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        for index, bucket in enumerate(response.json()["buckets"]):
            if bucket["minutes_with_heartbeat"]:
                found.add((device, index))
    return found


class Poller:
    """GETs ``path`` every ``interval`` seconds in a thread, noting any failure or non-200."""

    def __init__(self, url: str, interval: float = 0.1, timeout: float = 10.0) -> None:
        self.url, self.interval, self.timeout = url, interval, timeout
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.wait(self.interval):
            try:
                response = session.get(self.url, timeout=self.timeout)
            except requests.RequestException as error:
                self.failures.append(repr(error))
                continue
            self.answers += 1
            if response.status_code != 200:
                self.failures.append(f"{response.status_code} {response.text}")
