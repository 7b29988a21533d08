"""Optional protection: bearer tokens per role, and a write rate limit per device.

Both are off unless configured. Roles: ``read`` (GET under ``/api/v1``), ``device`` (the
device POSTs and batches) and ``admin`` (registering and removing devices). A role whose token
is set needs ``Authorization: Bearer <token>``; a stronger role's token is accepted too (admin
> device > read). Registry changes fall back to the device token when no admin token is set.
Tokens are compared in constant time (``hmac.compare_digest``) and never logged.
"""

from __future__ import annotations

import base64
import hmac
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleet_monitor.domain.tokens import TokenBucket

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

READ, DEVICE, ADMIN = "read", "device", "admin"


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
        if scheme.lower() == "basic":  # a browser's: any user name, the token as password
            try:
                given_bytes = base64.b64decode(given.strip(), validate=True).partition(b":")[2]
            except ValueError:
                return False
        elif scheme.lower() == "bearer":
            given_bytes = given.strip().encode()
        else:
            return False
        matched = False
        for token in accepted:  # every one compared, in constant time
            matched |= hmac.compare_digest(given_bytes, token)
        return matched


class RateLimiter:
    """A token bucket per key (a device, a client): ``rate`` a second, up to ``burst`` saved
    up; safe across threads. At most ``max_keys`` buckets are kept: past that the oldest is
    dropped (a key seen again starts full, as a new one would after a quiet spell)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one of ``key``'s tokens: 0.0 if it had one, else the seconds until it will
        (nothing is spent then)."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    del self._buckets[next(iter(self._buckets))]  # the oldest
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            return bucket.take(now)

    def refund(self, key: str) -> None:
        """Give back a token :meth:`take` spent on a request that was then not accepted."""
        with self._lock:
            if (bucket := self._buckets.get(key)) is not None:
                bucket.give_back()
