"""Optional protection: bearer tokens per role, and a write rate limit per device.

Both are off unless configured. Roles: ``read`` (GET under ``/api/v1``), ``device`` (the
device POSTs and batches) and ``admin`` (registering and removing devices). A role whose token
is set needs ``Authorization: Bearer <token>``; a stronger role's token is accepted too (admin
> device > read). Registry changes fall back to the device token when no admin token is set.
Tokens are compared in constant time (``hmac.compare_digest``) and never logged.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

READ, DEVICE, ADMIN = "read", "device", "admin"
CHALLENGE = 'Bearer realm="fleet-monitor"'


class Access:
    """Which tokens each role accepts; a role with none is open."""

    def __init__(
        self, read_token: str | None, device_token: str | None, admin_token: str | None
    ) -> None:
        strong = [token.encode() for token in (device_token, admin_token) if token]
        self._accepted: dict[str, list[bytes]] = {
            READ: [read_token.encode(), *strong] if read_token else [],
            DEVICE: strong if device_token else [],
            ADMIN: [admin_token.encode()]
            if admin_token
            else ([device_token.encode()] if device_token else []),
        }

    def allows(self, environ: WSGIEnvironment, role: str) -> bool:
        """Whether the request may act as ``role``."""
        accepted = self._accepted[role]
        if not accepted:
            return True
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        given_bytes = given.strip().encode()
        matched = False
        for token in accepted:  # every one compared, in constant time
            matched |= hmac.compare_digest(given_bytes, token)
        return matched


def parse_rate(text: str) -> float:
    """A rate such as ``5/s``, ``300/m`` or ``10`` (per second), as writes per second."""
    number, _, unit = text.strip().partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip().lower())
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if per is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive rate like 5/s, 300/m or 10, got {text!r}")
    return value / per


class RateLimiter:
    """A token bucket per device: ``rate`` writes a second, up to ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # device: (tokens, when)
        self._lock = threading.Lock()

    def take(self, device_id: str) -> float:
        """Spend one of the device's tokens: 0.0 if it had one, else the seconds until it
        will (nothing is spent then)."""
        now = self._clock()
        with self._lock:
            tokens, when = self._buckets.get(device_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            if tokens >= 1:
                self._buckets[device_id] = (tokens - 1, now)
                return 0.0
            self._buckets[device_id] = (tokens, now)
            return (1 - tokens) / self.rate

    def refund(self, device_id: str) -> None:
        """Give back a token :meth:`take` spent on a write that was then not accepted."""
        with self._lock:
            tokens, when = self._buckets.get(device_id, (float(self.burst), self._clock()))
            self._buckets[device_id] = (min(float(self.burst), tokens + 1), when)
