"""The Flask application: blueprints, JSON errors, metrics and the access log."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
)

from fleet_monitor.api import Clock, create_api
from fleet_monitor.config import Settings
from fleet_monitor.errors import InvalidInputError, UnknownDeviceError
from fleet_monitor.fleet import Fleet
from fleet_monitor.logs import ACCESS_LOGGER
from fleet_monitor.metrics import UNMATCHED_ROUTE, Metrics
from fleet_monitor.ops import create_ops
from fleet_monitor.readiness import READY, Readiness
from fleet_monitor.timestamps import NS_PER_SECOND

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

METRICS_EXTENSION = "fleet_monitor.metrics"
REQUEST_ID_HEADER = "X-Request-ID"
_STARTED = "fleet_monitor.started_ns"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}", re.ASCII)
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
# The reject reason of each HTTP error werkzeug raises (others: http_<code>).
_HTTP_REASONS = {
    404: "no_such_route",
    405: "method_not_allowed",
    413: "body_too_large",
    503: "not_ready",
}


def _http_error_message(error: HTTPException) -> str:
    if isinstance(error, NotFound):
        return f"no such endpoint: {request.path}"
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        return f"method {request.method} is not allowed here; allowed: {allowed}"
    if isinstance(error, RequestEntityTooLarge):
        return f"request body is larger than {request.max_content_length} bytes"
    return error.description or error.name


def request_id(environ: WSGIEnvironment) -> str:
    """The client's ``X-Request-ID`` when it is 1-128 safe characters, else a new random one."""
    given = environ.get("HTTP_X_REQUEST_ID")
    if given is not None and _SANE_REQUEST_ID.fullmatch(given):
        return str(given)
    return uuid.uuid4().hex


def system_clock() -> int:
    """Now, in nanoseconds since the epoch (looked up at each call, so freezegun can freeze it)."""
    return time.time_ns()


def create_app(
    settings: Settings,
    fleet: Fleet,
    clock: Clock = system_clock,
    readiness: Readiness | None = None,
) -> Flask:
    """The service's WSGI application for ``fleet``, configured by ``settings``.

    ``clock`` gives the service's "now" (for online status and default windows).
    ``readiness`` is the life cycle ``/readyz`` reports; the API answers 503 until the fleet
    is loaded. Without one, the app is ready at once.
    """
    readiness = readiness or Readiness(READY)
    offline_after_ns = settings.offline_after * NS_PER_SECOND
    metrics = Metrics(fleet, clock, offline_after_ns, per_device=settings.metrics_per_device)
    app = Flask(__name__)
    app.extensions[METRICS_EXTENSION] = metrics
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # "µs" as UTF-8, as Go sends it
    api = create_api(fleet, clock, offline_after_ns, metrics)

    @api.before_request
    def refuse_until_loaded() -> None:
        if not readiness.is_loaded:
            raise ServiceUnavailable(
                "the service is starting: the fleet is not loaded yet", retry_after=1
            )

    app.register_blueprint(api)
    app.register_blueprint(create_ops(fleet, readiness, metrics))

    def reject(status: int, reason: str, msg: str) -> Response:
        metrics.rejected(reason)
        response = jsonify({"msg": msg})
        response.status_code = status
        return response

    @app.errorhandler(UnknownDeviceError)
    def unknown_device(_: UnknownDeviceError) -> Response:
        return reject(404, "unknown_device", "device not found")

    @app.errorhandler(InvalidInputError)
    def invalid_input(error: InvalidInputError) -> Response:
        return reject(400, error.reason, str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        reason = _HTTP_REASONS.get(status, f"http_{status}")
        response = reject(status, reason, _http_error_message(error))
        for name, value in error.get_headers():  # e.g. Allow on a 405, Retry-After on a 503
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = jsonify({"msg": "internal server error"})
        response.status_code = 500
        return response

    @app.after_request
    def finish(response: Response) -> Response:
        # Read the WSGI environ directly: each request.<attr> is a context-local lookup.
        environ = request.environ
        seconds = (time.perf_counter_ns() - environ[_STARTED]) / 1e9
        rid = request_id(environ)
        response.headers[REQUEST_ID_HEADER] = rid
        method = environ["REQUEST_METHOD"]
        rule = request.url_rule
        route = rule.rule if rule else UNMATCHED_ROUTE
        status = response.status_code
        metrics.observe_request(route, method if method in _METHODS else "other", status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            # One line: what was asked, how it ended, how long it took. Never a body.
            path, query = request.path, environ.get("QUERY_STRING")
            remote = environ.get("REMOTE_ADDR")
            duration_ms = seconds * 1e3
            access_log.info(
                '%s "%s %s" %d %.2fms id=%s',
                remote,
                method,
                f"{path}?{query}" if query else path,
                status,
                duration_ms,
                rid,
                extra={
                    "fields": {
                        "method": method,
                        "path": path,
                        "query": query or None,
                        "route": rule.rule if rule else None,
                        "status": status,
                        "duration_ms": round(duration_ms, 3),
                        "remote_addr": remote,
                        "request_id": rid,
                    }
                },
            )
        return response

    flask_wsgi = app.wsgi_app

    def timed_wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[_STARTED] = time.perf_counter_ns()
        return flask_wsgi(environ, start_response)

    app.wsgi_app = timed_wsgi  # type: ignore[method-assign]
    return app
