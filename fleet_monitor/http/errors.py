"""One error table: every failure a request can meet, as (status, reason, msg, headers).

The Flask app and the fast path render every failure from here with :func:`render`, so a
client sees the same JSON ``{"msg"}`` (and the metrics the same ``reason``) whichever code
answered. ``reason`` is a fixed label of the ``rejected_requests`` metric, never user text.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from fleet_monitor.domain.errors import (
    InvalidInputError,
    RateLimitedError,
    StoreUnavailableError,
    UnknownDeviceError,
)
from fleet_monitor.domain.maintenance import UnknownWindowError

log = logging.getLogger(__name__)
CHALLENGE = 'Bearer realm="fleet-monitor"'
PAGE_CHALLENGE = 'Basic realm="fleet-monitor", charset="UTF-8"'  # a browser asks for the token
JSON = "application/json"
RETRY_SOON = "1"  # Retry-After, in seconds, of every refusal that passes by itself
Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ErrorReply:
    """How one failure is answered."""

    status: int
    reason: str
    msg: str
    headers: Headers = ()


class TokenRequiredError(Exception):
    """The request lacks the bearer token of ``role`` (401)."""

    def __init__(self, role: str) -> None:
        super().__init__(f"this needs Authorization: Bearer <the {role} token>")


class PageTokenRequiredError(Exception):
    """A status page without the read token (401, asking a browser for it)."""

    def __init__(self) -> None:
        super().__init__("this page needs the read token: any user name, the token as password")


class NotLoadedError(Exception):
    """The fleet is not loaded yet (503, retry in a second)."""

    def __init__(self) -> None:
        super().__init__("the service is starting: the fleet is not loaded yet")


class BodyTooLargeError(Exception):
    """A body larger than allowed (413); str() says the limit."""


def body_too_large(limit: int) -> BodyTooLargeError:
    """The refusal of a body of more than ``limit`` bytes."""
    return BodyTooLargeError(f"request body is larger than {limit} bytes")


def _retry_after(seconds: float) -> Headers:
    return (("Retry-After", str(max(int(RETRY_SOON), math.ceil(seconds)))),)


def _store_unavailable(error: StoreUnavailableError) -> ErrorReply:
    headers = () if error.retry_after is None else _retry_after(error.retry_after)
    return ErrorReply(503, error.reason, error.sentence(), headers)


# The first entry whose type matches answers (subclasses before their bases).
_TABLE: tuple[tuple[type[Exception], Callable[[Any], ErrorReply]], ...] = (
    (UnknownDeviceError, lambda _: ErrorReply(404, "unknown_device", "device not found")),
    (
        UnknownWindowError,
        lambda _: ErrorReply(404, "unknown_window", "maintenance window not found"),
    ),
    (InvalidInputError, lambda e: ErrorReply(e.status, e.reason, str(e))),
    (RateLimitedError, lambda e: ErrorReply(429, e.reason, str(e), _retry_after(e.retry_after))),
    (StoreUnavailableError, _store_unavailable),
    (
        TokenRequiredError,
        lambda e: ErrorReply(401, "unauthorized", str(e), (("WWW-Authenticate", CHALLENGE),)),
    ),
    (
        PageTokenRequiredError,
        lambda e: ErrorReply(401, "unauthorized", str(e), (("WWW-Authenticate", PAGE_CHALLENGE),)),
    ),
    (NotLoadedError, lambda e: ErrorReply(503, "not_ready", str(e), _retry_after(1))),
    (BodyTooLargeError, lambda e: ErrorReply(413, "body_too_large", str(e))),
)


def error_reply(error: BaseException) -> ErrorReply | None:
    """How ``error`` is answered, or None when it is unexpected (a 500)."""
    for kind, reply in _TABLE:
        if isinstance(error, kind):
            return reply(error)
    return None


INTERNAL_ERROR = ErrorReply(500, "internal_error", "internal server error")


def reply_for(error: BaseException, request_line: str) -> ErrorReply:
    """How ``error``, met answering ``request_line`` (``POST /path``), is answered; logs the
    traceback of an unexpected one (a 500) and the cause of a store that refused a change."""
    reply = error_reply(error)
    if reply is None:
        log.exception("unhandled error in %s", request_line)
        return INTERNAL_ERROR
    if isinstance(error, StoreUnavailableError):
        log.error("%s: the change was refused", error)  # throttled by the log handler
    return reply


def json_bytes(value: Any) -> bytes:
    """``value`` as the service writes JSON: compact, UTF-8, field order kept, a newline."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def status_line(status: int) -> str:
    """``404 NOT FOUND``: the status line's text as werkzeug writes it."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


def render(reply: ErrorReply) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status line, headers and body of ``reply``."""
    body = json_bytes({"msg": reply.msg})
    headers = [("Content-Type", JSON), ("Content-Length", str(len(body))), *reply.headers]
    return status_line(reply.status), headers, body
