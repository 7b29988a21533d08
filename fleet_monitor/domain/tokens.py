"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved up.

One algorithm for the service's per-device and per-client rate limits and for the simulator's
shared sending rate. Not thread-safe: the owner locks it. Times are seconds of a monotonic
clock, passed in.
"""

from __future__ import annotations


class TokenBucket:
    """Tokens refill continuously; :meth:`take` refuses when none is left, :meth:`reserve`
    borrows the next one and says how long until it is due."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> float:
        """Spend a token: 0.0 if there was one, else the seconds until one is due (then
        nothing is spent)."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def reserve(self, now: float) -> float:
        """Spend a token, borrowing it if none is left; return the seconds to wait before
        using it (0.0 when it was there). At most ``rate + burst`` reservations are due in any
        one-second window."""
        self._refill(now)
        self.tokens -= 1
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    def give_back(self) -> None:
        """Return a token spent on something that was then not done."""
        self.tokens = min(self.burst, self.tokens + 1)
