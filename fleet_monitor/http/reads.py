"""Costly reads: how much windowed-read work may run at once, and one fleet summary at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fleet_monitor.domain import readmodels
from fleet_monitor.domain.errors import RateLimitedError
from fleet_monitor.domain.readmodels import Expectations, FleetReads, FleetSummary


class ReadBudget:
    """At most ``steps`` window steps computed at once across all windowed reads.

    A read larger than the whole budget still runs when it is the only one, so every valid
    window can be read; it just never runs beside others past the budget. Windowed reads are
    CPU work under the GIL: bounding them keeps every other request (the heartbeats) fast.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._in_flight = 0
        self._lock = threading.Lock()

    @contextmanager
    def spend(self, steps: int) -> Iterator[None]:
        """Hold ``steps`` of the budget while the block runs; raises RateLimitedError (retry
        in 1 s) at once, without waiting, when they are not free."""
        with self._lock:
            if self._in_flight and self._in_flight + steps > self.steps:
                raise RateLimitedError(
                    1.0,
                    f"too many windowed reads at once: {self._in_flight} steps are being "
                    f"computed and at most {self.steps} may be (--read-budget); retry shortly",
                )
            self._in_flight += steps
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= steps


class FleetSummaries:
    """The fleet summary, computed by one thread at a time: callers that come while it is
    being computed wait for that computation and share its result.

    A summary reads every device, so it costs time in proportion to the fleet; however many
    clients ask at once (``/fleet``, ``/metrics``), the service spends one thread on it.
    """

    def __init__(
        self,
        store: FleetReads,
        clock: Callable[[], int],
        expectations: Expectations,
        group_by: str | None = None,
    ) -> None:
        self._store, self._clock, self._expectations = store, clock, expectations
        self._group_by = group_by  # counted per value too (for /metrics)
        self._lock = threading.Lock()
        self._running: _Computation | None = None

    def get(self) -> FleetSummary:
        """The summary now (or as of a computation that began after this call's caller's
        request arrived at most one computation ago)."""
        with self._lock:
            running, leader = self._running, self._running is None
            if running is None:
                running = self._running = _Computation()
        if not leader:
            running.done.wait()
            if running.result is None:
                raise RuntimeError("the fleet summary failed in another request")
            return running.result
        try:
            running.result = readmodels.fleet_summary(
                self._store, self._clock(), self._expectations, group_by=self._group_by
            )
        finally:
            with self._lock:
                self._running = None
            running.done.set()
        return running.result


class _Computation:
    """One summary being computed, and its result once done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: FleetSummary | None = None
