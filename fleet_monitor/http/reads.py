"""The read budget: how much windowed-read work may run at once in this process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fleet_monitor.domain.errors import RateLimitedError


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
