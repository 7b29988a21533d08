"""Device events (heartbeats, uploads) and their validation: JSON text in, typed values or a
clear message out.

Shared by every door that accepts events (the single endpoints, batches, the simulator's
scenarios), so a bad field gets the same sentence wherever it arrives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.timestamps import EXPECTED_FORM, TimestampError, parse_rfc3339

HEARTBEAT, UPLOAD = "heartbeat", "upload"

MAX_UPLOAD_TIME_NS = 2**63 - 1
_UPLOAD_FORM = f"an integer number of nanoseconds from 0 to {MAX_UPLOAD_TIME_NS}"
_LONGEST_INT_TEXT = len(str(MAX_UPLOAD_TIME_NS)) + 2


class _OversizedInt:
    """Stands in for a JSON integer too long to be any field's valid value."""


@dataclass(frozen=True)
class Heartbeat:
    """A validated heartbeat: when the device sent it, and when the service received it (set
    by the ingest; not part of what it is: a retry received later is the same heartbeat)."""

    sent_at_ns: int
    received_ns: int | None = field(default=None, compare=False)
    kind = HEARTBEAT

    @property
    def fingerprint(self) -> tuple[int, None]:
        """What an idempotency key remembers of it."""
        return (self.sent_at_ns, None)


@dataclass(frozen=True)
class Upload:
    """A validated upload record: when it was sent and how long the upload took."""

    sent_at_ns: int
    upload_time_ns: int
    kind = UPLOAD

    @property
    def fingerprint(self) -> tuple[int, int]:
        """What an idempotency key remembers of it."""
        return (self.sent_at_ns, self.upload_time_ns)


Event = Heartbeat | Upload


def _parse_int(text: str) -> int | _OversizedInt:
    # Avoids int()'s digit limit (and its cost) for absurd literals: they are out of range.
    return int(text) if len(text) <= _LONGEST_INT_TEXT else _OversizedInt()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every request: json.loads(..., parse_int=...) builds a new one each call.
_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_reject_constant)


_UTF8_BOM = b"\xef\xbb\xbf"


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse ``body`` as a JSON object, whatever the request's content type claimed.

    Only UTF-8 is JSON on the wire (RFC 8259 section 8.1): UTF-16 or UTF-32 text, and a
    byte-order mark, are refused like any other invalid body.
    """
    if body.startswith(_UTF8_BOM):
        raise InvalidInputError(
            "request body must be JSON in UTF-8, without a byte-order mark", "invalid_json"
        )
    try:
        text = body.decode("utf-8")
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        raise InvalidInputError("request body is not valid JSON", "invalid_json") from None
    if not isinstance(value, dict):
        raise InvalidInputError("request body must be a JSON object", "invalid_json")
    if "\\ud" in text or "\\uD" in text:  # an escaped surrogate: it must have its pair
        _check_text(value)
    return value


def _check_text(value: object) -> None:
    """Raise InvalidInputError if a string in ``value`` holds a lone surrogate (JSON escapes
    allow one; no UTF-8 text can hold it, so it could never be answered back)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                "request body is not valid JSON: a string holds a lone surrogate (\\ud800-"
                "\\udfff without its pair)",
                "invalid_json",
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def parse_sent_at(fields: dict[str, Any]) -> int:
    """The ``sent_at`` field as nanoseconds since the epoch."""
    if "sent_at" not in fields:
        raise InvalidInputError(f"sent_at is required: {EXPECTED_FORM}", "invalid_field")
    value = fields["sent_at"]
    if not isinstance(value, str):
        raise InvalidInputError(f"sent_at must be a string: {EXPECTED_FORM}", "invalid_field")
    return parse_timestamp("sent_at", value)


def parse_timestamp(name: str, text: str, reason: str = "invalid_field") -> int:
    """``text`` as nanoseconds since the epoch; the error names ``name`` and has ``reason``."""
    try:
        return parse_rfc3339(text)
    except TimestampError as error:
        raise InvalidInputError(f"{name} {error}", reason) from None


def parse_upload_time(fields: dict[str, Any]) -> int:
    """The ``upload_time`` field: a JSON integer of nanoseconds in int64 range."""
    if "upload_time" not in fields:
        raise InvalidInputError(f"upload_time is required: {_UPLOAD_FORM}", "invalid_field")
    value = fields["upload_time"]
    if isinstance(value, _OversizedInt) or (
        type(value) is int and not 0 <= value <= MAX_UPLOAD_TIME_NS
    ):
        raise InvalidInputError(f"upload_time is out of range: {_UPLOAD_FORM}", "invalid_field")
    if type(value) is not int:
        raise InvalidInputError(f"upload_time must be {_UPLOAD_FORM}", "invalid_field")
    return value


def parse_heartbeat(fields: dict[str, Any], received_ns: int | None = None) -> Heartbeat:
    """A heartbeat from its JSON fields, received at ``received_ns``; unknown fields are
    ignored."""
    return Heartbeat(parse_sent_at(fields), received_ns)


def parse_upload(fields: dict[str, Any], received_ns: int | None = None) -> Upload:
    """An upload record from its JSON fields (when it was received is not kept); unknown
    fields are ignored."""
    return Upload(parse_sent_at(fields), parse_upload_time(fields))


# Each kind's parser: (JSON fields, when received) -> the event.
PARSERS: dict[str, Callable[[dict[str, Any], int | None], Event]] = {
    HEARTBEAT: parse_heartbeat,
    UPLOAD: parse_upload,
}
