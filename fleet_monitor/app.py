"""The Flask application: routes, JSON errors and the access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from fleet_monitor.api import Clock, create_api
from fleet_monitor.config import Settings
from fleet_monitor.errors import InvalidInputError, UnknownDeviceError
from fleet_monitor.fleet import Fleet
from fleet_monitor.logs import ACCESS_LOGGER
from fleet_monitor.timestamps import NS_PER_SECOND

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)
_STARTED = "fleet_monitor.started_ns"
access_log = logging.getLogger(ACCESS_LOGGER)


def _http_error_message(error: HTTPException) -> str:
    if isinstance(error, NotFound):
        return f"no such endpoint: {request.path}"
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        return f"method {request.method} is not allowed here; allowed: {allowed}"
    if isinstance(error, RequestEntityTooLarge):
        return f"request body is larger than {request.max_content_length} bytes"
    return error.description or error.name


def system_clock() -> int:
    """Now, in nanoseconds since the epoch (looked up at each call, so freezegun can freeze it)."""
    return time.time_ns()


def create_app(settings: Settings, fleet: Fleet, clock: Clock = system_clock) -> Flask:
    """The service's WSGI application for ``fleet``, configured by ``settings``.

    ``clock`` gives the service's "now" (for online status and default windows).
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # "µs" as UTF-8, as Go sends it
    app.register_blueprint(create_api(fleet, clock, settings.offline_after * NS_PER_SECOND))

    def error_reply(status: int, msg: str) -> Response:
        response = jsonify({"msg": msg})
        response.status_code = status
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "devices": len(fleet)})

    @app.errorhandler(UnknownDeviceError)
    def unknown_device(_: UnknownDeviceError) -> Response:
        return error_reply(404, "device not found")

    @app.errorhandler(InvalidInputError)
    def invalid_input(error: InvalidInputError) -> Response:
        return error_reply(400, str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = error_reply(error.code or 500, _http_error_message(error))
        for name, value in error.get_headers():  # e.g. Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_reply(500, "internal server error")

    @app.after_request
    def log_access(response: Response) -> Response:
        if access_log.isEnabledFor(logging.INFO):
            # Read the WSGI environ directly: each request.<attr> is a context-local lookup.
            environ = request.environ
            duration_ms = (time.perf_counter_ns() - environ[_STARTED]) / 1e6
            method, path = environ["REQUEST_METHOD"], request.path
            query = environ.get("QUERY_STRING")
            remote = environ.get("REMOTE_ADDR")
            rule = request.url_rule
            access_log.info(
                '%s "%s %s" %d %.2fms',
                remote,
                method,
                f"{path}?{query}" if query else path,
                response.status_code,
                duration_ms,
                extra={
                    "fields": {
                        "method": method,
                        "path": path,
                        "route": rule.rule if rule else None,
                        "status": response.status_code,
                        "duration_ms": round(duration_ms, 3),
                        "remote_addr": remote,
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
