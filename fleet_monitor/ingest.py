"""Device writes, whichever door they come in by: one heartbeat or upload, or a batch.

Knows nothing of WSGI: the Flask views, the fast path and the batch endpoint hand it a device
id, a body and an idempotency key. One write is checked in this order, and nothing is stored
unless every check passes: the device (UnknownDeviceError, 404), the body (InvalidInputError,
400), the ``sent_at`` range (LimitExceededError, 422), the device's write rate
(RateLimitedError, 429), then the record itself (a reused key or a spent history budget, 422;
a journal that cannot be written, JournalError, 503).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet_monitor.errors import InvalidInputError, RateLimitedError, UnknownDeviceError
from fleet_monitor.fleet import DeviceRecord, Fleet
from fleet_monitor.guard import RateLimiter
from fleet_monitor.idempotency import HEARTBEAT, UPLOAD
from fleet_monitor.journal import JournalError
from fleet_monitor.limits import SentAtRange
from fleet_monitor.metrics import Metrics
from fleet_monitor.payloads import (
    Heartbeat,
    Upload,
    parse_heartbeat,
    parse_json_object,
    parse_upload,
)

Event = Heartbeat | Upload
# What a refused batch event reports, by the error that refused it (else str(error)).
_BATCH_MESSAGES: dict[type[Exception], str] = {
    UnknownDeviceError: "device not found",
    RateLimitedError: "too many writes for this device",
}
_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    HEARTBEAT: parse_heartbeat,
    UPLOAD: parse_upload,
}


@dataclass(frozen=True, order=True)
class Rejection:
    """A batch event that was not recorded: its index and why."""

    index: int
    msg: str


@dataclass(frozen=True)
class _Valid:
    """A validated write, ready to be recorded."""

    device: DeviceRecord
    event: Event


class Ingest:
    """Validates, bounds, rate-limits, records and counts device writes."""

    def __init__(
        self,
        fleet: Fleet,
        metrics: Metrics,
        clock: Callable[[], int],
        *,
        sent_at_range: SentAtRange | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.fleet, self.metrics, self.clock = fleet, metrics, clock
        self.sent_at_range = sent_at_range or SentAtRange()
        self.limiter = limiter

    def write(self, kind: str, device_id: str, body: bytes, key: str | None) -> None:
        """Record one ``kind`` (heartbeat or upload) write of ``body`` for ``device_id``;
        raises (see the module's docstring) before storing anything."""
        valid = self._validate(self.fleet.device(device_id), kind, parse_json_object(body))
        self._record(valid, key)

    def batch(self, events: list[Any]) -> list[Rejection]:
        """Record a batch's valid events; return the others with why, in index order.

        Every event is validated before any is recorded, so a batch whose validation fails
        (whatever its content) stores nothing; events then refused by the rate limit, a
        budget or the journal are reported like invalid ones.
        """
        rejected: list[Rejection] = []
        valid: list[tuple[int, _Valid]] = []
        for index, event in enumerate(events):
            try:
                valid.append((index, self._validate_event(event)))
            except (InvalidInputError, UnknownDeviceError) as error:
                rejected.append(Rejection(index, _batch_message(error)))
        for index, write in valid:
            try:
                self._record(write, None)
            except (InvalidInputError, UnknownDeviceError, RateLimitedError, JournalError) as error:
                rejected.append(Rejection(index, _batch_message(error)))
        return sorted(rejected)

    def _validate_event(self, event: object) -> _Valid:
        if not isinstance(event, dict):
            raise InvalidInputError("an event must be a JSON object", "invalid_field")
        device_id = event.get("device_id")
        if not isinstance(device_id, str):
            raise InvalidInputError("device_id is required: a string", "invalid_field")
        device = self.fleet.device(device_id)
        kind = event.get("type")
        if not isinstance(kind, str) or kind not in _PARSERS:  # a list is not hashable
            raise InvalidInputError("type must be heartbeat or upload", "invalid_field")
        return self._validate(device, kind, event)

    def _validate(self, device: DeviceRecord, kind: str, fields: dict[str, Any]) -> _Valid:
        event = _PARSERS[kind](fields)
        if not self.sent_at_range.is_open:
            self.sent_at_range.check(event.sent_at_ns, self.clock())
        return _Valid(device, event)

    def _record(self, valid: _Valid, key: str | None) -> None:
        device, event = valid.device, valid.event
        if self.limiter is not None and (wait := self.limiter.take(device.device_id)) > 0:
            raise RateLimitedError(
                wait,
                f"too many writes for this device: at most {self.limiter.rate:g} a second, "
                f"{self.limiter.burst} at once",
            )
        try:
            if isinstance(event, Heartbeat):
                self.metrics.heartbeat_accepted(device.add_heartbeat(event.sent_at_ns, key))
            else:
                device.add_upload(event.sent_at_ns, event.upload_time_ns, key)
                self.metrics.uploads.inc()
        except Exception:
            if self.limiter is not None:
                self.limiter.refund(device.device_id)  # not accepted: its token comes back
            raise


def _batch_message(error: Exception) -> str:
    return _BATCH_MESSAGES.get(type(error), str(error))
