"""A service clock the test moves (nanoseconds since the epoch), for ``create_app(clock=…)``."""

from __future__ import annotations

from fleet_monitor.domain.timestamps import NS_PER_SECOND


class Clock:
    """Now is ``now`` until the test changes it or :meth:`advance` moves it."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on."""
        self.now += int(seconds * NS_PER_SECOND)
