"""A WSGI fast path for device writes, in front of Flask.

Devices send a heartbeat a minute each, so ``POST …/heartbeat`` is nearly all of the traffic.
Flask's contexts, routing, signals and response object cost more than the write itself (row
1 of ``benchmarks/results.md``: the Flask floor against waitress's ceiling). This wrapper
answers every POST whose path matches a device write of
:data:`~fleet_monitor.http.writes.DEVICE_WRITES` and that carries a ``Content-Length``: it
applies the same rules (:class:`Admission`, :func:`read_body`), calls
the same :class:`Ingest` and renders any failure from the same error table as the Flask views,
and records the request through the same :class:`RequestObserver`, so the reply, the metrics
and the access line are those Flask would give. Anything else goes to Flask untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fleet_monitor.http.errors import INTERNAL_ERROR, render, reply_for
from fleet_monitor.http.observe import REQUEST_ID_HEADER, RequestObserver
from fleet_monitor.http.rules import Admission
from fleet_monitor.http.writes import (
    DEVICE_WRITE_PATH,
    WRITES_BY_ACTION,
    Ingest,
    write_from_request,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

NO_CONTENT = "204 NO CONTENT"  # as werkzeug writes it


def fast_device_writes(
    app: WSGIApplication,
    *,
    ingest: Ingest,
    admission: Admission,
    observer: RequestObserver,
    max_body_bytes: int,
) -> WSGIApplication:
    """``app`` behind the fast path for device writes."""

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST" or not environ.get("CONTENT_LENGTH"):
            return app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        match = DEVICE_WRITE_PATH.fullmatch(path)
        if match is None:
            return app(environ, start_response)
        device_id, write = match[1], WRITES_BY_ACTION[match[2]]
        try:
            admission.admit(environ, write.role)
            write_from_request(ingest, write.kind, device_id, environ, max_body_bytes)
        except Exception as error:
            reply = reply_for(error, f"POST {path}")
            if reply.status != INTERNAL_ERROR.status:
                observer.rejected(reply.reason)
            status, headers, body = render(reply)
            rid = observer.finish(environ, path, write.route, reply.status)
            start_response(status, [*headers, (REQUEST_ID_HEADER, rid)])
            return (body,)
        rid = observer.finish(environ, path, write.route, 204)
        start_response(NO_CONTENT, [(REQUEST_ID_HEADER, rid)])
        return ()

    return wsgi
