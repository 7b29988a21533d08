"""JSON answers for what waitress refuses before the app sees a request.

waitress answers a request it cannot parse (400, 413, 431, 501) with a plain-text page of its
own. :class:`JsonErrorTask` answers the same statuses with the service's contract instead:
``Content-Type: application/json`` and ``{"msg": "<sentence>"}``, then closes the connection
as waitress does. It also answers the connection guard's 408 and 503 (see ``connections.py``),
gives each answer an ``X-Request-ID`` and writes an access line, as the app does for its own.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from waitress.adjustments import Adjustments
from waitress.task import ErrorTask
from waitress.utilities import (
    BadRequest,
    Error,
    InternalServerError,
    RequestEntityTooLarge,
    RequestHeaderFieldsTooLarge,
    ServerNotImplemented,
)

from fleet_monitor.http.errors import JSON, RETRY_SOON, body_too_large, json_bytes
from fleet_monitor.http.observe import REQUEST_ID_HEADER, log_access, request_id
from fleet_monitor.logs import ACCESS_LOGGER

if TYPE_CHECKING:
    from waitress.parser import HTTPRequestParser

access_log = logging.getLogger(ACCESS_LOGGER)

# waitress's reasons for a 400 (the start of its message) and the sentence a client gets.
_BAD_REQUEST = {
    "Invalid header": "a header line is not a valid NAME: VALUE pair",
    "Content-Length is invalid": "Content-Length must be a single whole number of bytes",
    "Bad URI": "the request target is not a valid URI: percent-encode any non-ASCII character",
    "Malformed HTTP method": "the method is not valid: methods are case-sensitive, e.g. GET",
    "Start line is invalid": "the request line must be METHOD TARGET HTTP/1.1",
    "HTTP message header invalid": "the request line must be METHOD TARGET HTTP/1.1",
    "Bare CR or LF found in HTTP message": "the request line holds a bare CR or LF",
    "Bare CR or LF found in header line": "a header line holds a bare CR or LF",
    "Malformed header line": "a header line starts with white space (obsolete line folding)",
    "Invalid chunk size": "a chunk size of the chunked body is not a hexadecimal number",
    "Invalid chunk extension": "a chunk extension of the chunked body is not valid",
    "Chunk not properly terminated": "a chunk of the chunked body does not end with CRLF",
}


class HeaderTimeoutError(Error):
    """408: the request's headers did not arrive in time; ``body`` is the sentence sent."""

    code = 408
    reason = "Request Timeout"


class NoSlotError(Error):
    """503: no connection slot for this request; ``body`` is the sentence sent."""

    code = 503
    reason = "Service Unavailable"


def describe(error: Error, adj: Adjustments) -> str:
    """The sentence a client gets for one of waitress's errors (or one of ours)."""
    if isinstance(error, RequestHeaderFieldsTooLarge):
        return f"the request line and headers are larger than {adj.max_request_header_size} bytes"
    if isinstance(error, RequestEntityTooLarge):  # waitress refuses a body of max or more bytes
        return str(body_too_large(adj.max_request_body_size - 1))
    if isinstance(error, BadRequest):
        return _bad_request(str(error.body))
    if isinstance(error, ServerNotImplemented):
        return "only Transfer-Encoding: chunked is supported; send other bodies with Content-Length"
    if isinstance(error, InternalServerError):
        return "internal server error"  # the app's words; the traceback went to the log
    return str(error.body)


def _bad_request(detail: str) -> str:
    for prefix, sentence in _BAD_REQUEST.items():
        if detail.startswith(prefix):
            return sentence
    return f"the request is not valid HTTP: {detail}"


class JsonErrorTask(ErrorTask):
    """waitress's error answer with a JSON body, a request id and an access line."""

    def execute(self) -> None:
        """Write the status, the JSON body and ``Connection: close``."""
        request: HTTPRequestParser = self.request  # type: ignore[assignment]
        error: Error = request.error  # type: ignore[assignment]
        msg = describe(error, self.channel.adj)
        body = json_bytes({"msg": msg})
        rid = request_id({"HTTP_X_REQUEST_ID": request.headers.get("X_REQUEST_ID")})
        self.status = f"{error.code} {error.reason}"
        headers = [("Content-Type", JSON), (REQUEST_ID_HEADER, rid)]
        if error.code == NoSlotError.code:
            headers.append(("Retry-After", RETRY_SOON))
        self.response_headers = [*self.response_headers, *headers]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        _log_answer(self, request, error.code, rid)


def _log_answer(task: JsonErrorTask, request: HTTPRequestParser, status: int, rid: str) -> None:
    """The access line of an answer the app never saw (``route`` null)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    parsed = not isinstance(request.error, RequestHeaderFieldsTooLarge)  # else a stand-in line
    log_access(
        method=getattr(request, "command", None) if parsed else None,
        path=getattr(request, "path", None) if parsed else None,
        query=getattr(request, "query", None) if parsed else None,
        route=None,
        status=status,
        seconds=time.time() - task.start_time,
        remote=task.channel.addr[0] if task.channel.addr else None,
        rid=rid,
    )
