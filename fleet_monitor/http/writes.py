"""Device writes: the one table of them, and the ingest every door calls.

:data:`DEVICE_WRITES` says, per write, its route, the role it needs and the event it carries;
the Flask rules, the roles table and the fast path's matcher are all built from it.
:class:`Ingest` knows nothing of WSGI: the Flask views, the batch endpoint and the fast path
hand it a device id, a body and an idempotency key. One write is checked in this order, and
nothing is stored unless every check passes: the device (404), the body (400), the ``sent_at``
range (422), the device's write rate (429), then the store's own checks (a reused key 409, a
spent history budget 422, a store that cannot keep it 503).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet_monitor.domain.devices import DEVICE_ID_PATTERN
from fleet_monitor.domain.errors import (
    InvalidInputError,
    NotConfirmedError,
    RateLimitedError,
    StoreUnavailableError,
    UnknownDeviceError,
)
from fleet_monitor.domain.events import (
    HEARTBEAT,
    PARSERS,
    UPLOAD,
    Event,
    Heartbeat,
    parse_json_object,
)
from fleet_monitor.domain.limits import SentAtRange
from fleet_monitor.http.guard import ADMIN, DEVICE
from fleet_monitor.http.metrics import Metrics
from fleet_monitor.http.rules import read_body
from fleet_monitor.store.protocol import Store

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from fleet_monitor.http.guard import RateLimiter

API_PREFIX = "/api/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"[!-~]{1,255}", re.ASCII)


@dataclass(frozen=True)
class DeviceWrite:
    """One device write endpoint: its Flask endpoint name, rule, role and event kind."""

    endpoint: str
    action: str  # the last path segment
    kind: str
    role: str = DEVICE

    @property
    def rule(self) -> str:
        """The Flask rule, under :data:`API_PREFIX`."""
        return f"/devices/<device_id>/{self.action}"

    @property
    def route(self) -> str:
        """The route template, as logged and counted."""
        return API_PREFIX + self.rule


DEVICE_WRITES = (
    DeviceWrite("post_heartbeat", "heartbeat", HEARTBEAT),
    DeviceWrite("post_stats", "stats", UPLOAD),
)
WRITES_BY_ACTION = {write.action: write for write in DEVICE_WRITES}
# The role each API endpoint needs (the others: read).
ROLES = {
    **{f"api.{write.endpoint}": write.role for write in DEVICE_WRITES},
    "api.post_events": DEVICE,
    "api.put_device": ADMIN,
    "api.delete_device": ADMIN,
    "api.post_maintenance": ADMIN,
    "api.delete_maintenance": ADMIN,
}
# The fast path's matcher: a device write's path, capturing the id and the action.
DEVICE_WRITE_PATH = re.compile(
    rf"{API_PREFIX}/devices/({DEVICE_ID_PATTERN})/({'|'.join(WRITES_BY_ACTION)})", re.ASCII
)


def require_device(store: Store, device_id: str) -> None:
    """Raise UnknownDeviceError (404) unless ``device_id`` is in the fleet."""
    if device_id not in store:
        raise UnknownDeviceError(device_id)


def write_from_request(
    ingest: Ingest, kind: str, device_id: str, environ: WSGIEnvironment, max_body_bytes: int
) -> None:
    """One device write from a request, for the Flask views and the fast path alike: the
    device (404) before the key (400) and the body (413, then the ingest's checks).

    The device is looked up only for a request refused on its way in: an accepted one is
    refused by the store itself when the device is unknown, so a write is one store call (one
    engine round trip on Valkey)."""
    try:
        key = idempotency_key(environ)
        event = ingest.event(kind, read_body(environ, max_body_bytes))
    except Exception:
        require_device(ingest.store, device_id)
        raise
    ingest.record(device_id, event, key)


def idempotency_key(environ: WSGIEnvironment) -> str | None:
    """The request's ``Idempotency-Key``, checked; None without one."""
    # From the environ: werkzeug's header lookup raises and catches an exception on a miss.
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidInputError(
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters", "invalid_header"
        )
    return key


@dataclass(frozen=True, order=True)
class Rejection:
    """A batch event that was not recorded: its index and why."""

    index: int
    msg: str


# What a refused batch event reports, by the error that refused it (else str(error)).
_BATCH_MESSAGES: dict[type[Exception], str] = {
    UnknownDeviceError: "device not found",
    RateLimitedError: "too many writes for this device",
}
_REFUSALS = (InvalidInputError, UnknownDeviceError, RateLimitedError, StoreUnavailableError)


class Ingest:
    """Validates, bounds, rate-limits, records and counts device writes."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], int],
        *,
        sent_at_range: SentAtRange | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.store, self.metrics, self.clock = store, metrics, clock
        self.sent_at_range = sent_at_range or SentAtRange()
        self.limiter = limiter

    def event(self, kind: str, body: bytes) -> Event:
        """The ``kind`` (heartbeat or upload) event ``body`` describes; raises
        InvalidInputError."""
        return self._validate(kind, parse_json_object(body))

    def record(self, device_id: str, event: Event, key: str | None) -> None:
        """Record ``event`` for ``device_id`` once per ``key``; raises (see the module's
        docstring) before storing anything, UnknownDeviceError first."""
        self._record(device_id, event, key)

    def batch(self, events: list[Any]) -> list[Rejection]:
        """Record a batch's valid events; return the others with why, in index order.

        Every event is validated before any is recorded, so a batch whose validation fails
        (whatever its content) stores nothing; events then refused by the rate limit, a
        budget or the store are reported like invalid ones. The valid events go to the store
        together (one pipeline on Valkey), and the batch waits once for their durability.
        """
        rejected: list[Rejection] = []
        valid: list[tuple[int, str, Event]] = []
        for index, item in enumerate(events):
            try:
                valid.append((index, *self._validate_event(item)))
            except (InvalidInputError, UnknownDeviceError) as error:
                rejected.append(Rejection(index, _batch_message(error)))
        admitted: list[tuple[int, str, Event]] = []
        for index, device_id, event in valid:
            try:
                self._take_token(device_id)
            except (UnknownDeviceError, RateLimitedError) as error:
                rejected.append(Rejection(index, _batch_message(error)))
            else:
                admitted.append((index, device_id, event))
        outcomes = self._record_many([(device_id, event) for _, device_id, event in admitted])
        for (index, device_id, event), outcome in zip(admitted, outcomes, strict=True):
            if isinstance(outcome, Exception):
                if not isinstance(outcome, _REFUSALS):
                    raise outcome
                rejected.append(Rejection(index, _batch_message(outcome)))
                if self.limiter is not None:
                    self.limiter.refund(device_id)
            else:
                self._count(event, outcome)
        if len(rejected) < len(events):
            self.store.flush()  # one wait for the durability of the whole batch
        return sorted(rejected)

    def _record_many(self, events: list[tuple[str, Event]]) -> list[bool | Exception]:
        """The store's outcomes; its tokens come back to every device if the store fails."""
        if not events:
            return []
        try:
            return self.store.record_many(events)
        except StoreUnavailableError:
            if self.limiter is not None:
                for device_id, _ in events:
                    self.limiter.refund(device_id)
            raise

    def _validate_event(self, item: object) -> tuple[str, Event]:
        if not isinstance(item, dict):
            raise InvalidInputError("an event must be a JSON object", "invalid_field")
        device_id = item.get("device_id")
        if not isinstance(device_id, str):
            raise InvalidInputError("device_id is required: a string", "invalid_field")
        try:
            kind = item.get("type")
            if not isinstance(kind, str) or kind not in PARSERS:  # a list is not hashable
                raise InvalidInputError("type must be heartbeat or upload", "invalid_field")
            return device_id, self._validate(kind, item)
        except InvalidInputError:
            require_device(self.store, device_id)  # an unknown device says so first
            raise

    def _validate(self, kind: str, fields: dict[str, Any]) -> Event:
        """The event, its ``sent_at`` in the accepted range; a heartbeat stamped with when it
        was received (its device's state is judged on that, not on ``sent_at``)."""
        now = self.clock()
        event = PARSERS[kind](fields, now)
        if not self.sent_at_range.is_open:
            self.sent_at_range.check(event.sent_at_ns, now)
        return event

    def _record(self, device_id: str, event: Event, key: str | None) -> None:
        self._take_token(device_id)
        try:
            new = self.store.record(device_id, event, key)
        except NotConfirmedError:
            self._count(event, new=True)  # recorded, though not confirmed: it counts
            raise
        except Exception:
            if self.limiter is not None:
                self.limiter.refund(device_id)  # not accepted: its token comes back
            raise
        self._count(event, new)

    def _take_token(self, device_id: str) -> None:
        """Spend one of the device's write tokens; raises RateLimitedError when it has none
        (UnknownDeviceError first for a device not in the fleet)."""
        limiter = self.limiter
        if limiter is not None and (retry_after := limiter.take(device_id)) > 0:
            require_device(self.store, device_id)
            raise RateLimitedError(
                retry_after,
                f"too many writes for this device: at most {limiter.rate:g} a second, "
                f"{limiter.burst} at once",
            )

    def _count(self, event: Event, new: bool) -> None:
        """Count an accepted heartbeat (a duplicate when its minute was known) or a newly
        recorded upload (a repeated key's is not counted again)."""
        if isinstance(event, Heartbeat):
            self.metrics.heartbeat_accepted(new)
        elif new:
            self.metrics.upload_accepted()


def _batch_message(error: Exception) -> str:
    if isinstance(error, StoreUnavailableError):
        return error.sentence()  # as the single endpoints say it
    return _BATCH_MESSAGES.get(type(error), str(error))
