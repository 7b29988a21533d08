"""The Flask application: blueprints, JSON errors, metrics and the access log."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import (
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    Unauthorized,
)

from fleet_monitor.api import BatchTooLargeError, Clock, create_api
from fleet_monitor.config import Settings
from fleet_monitor.errors import InvalidInputError, RateLimitedError, UnknownDeviceError
from fleet_monitor.fast_path import fast_device_posts
from fleet_monitor.fleet import Fleet
from fleet_monitor.guard import ADMIN, CHALLENGE, DEVICE, READ, Access, RateLimiter
from fleet_monitor.ingest import Ingest
from fleet_monitor.journal import JournalError
from fleet_monitor.limits import HistoryBudget, ReadBudget, SentAtRange
from fleet_monitor.metrics import Metrics
from fleet_monitor.observe import REQUEST_ID_HEADER, RequestObserver
from fleet_monitor.ops import create_ops
from fleet_monitor.readiness import READY, Readiness
from fleet_monitor.timestamps import NS_PER_SECOND

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)

METRICS_EXTENSION = "fleet_monitor.metrics"
BATCH_EVENT_BYTES = 512
# The role each API endpoint needs (the others: read).
_ROLES = {
    "api.post_heartbeat": DEVICE,
    "api.post_stats": DEVICE,
    "api.post_events": DEVICE,
    "api.put_device": ADMIN,
    "api.delete_device": ADMIN,
}
# The reject reason of each HTTP error werkzeug raises (others: http_<code>).
_HTTP_REASONS = {
    401: "unauthorized",
    404: "no_such_route",
    405: "method_not_allowed",
    413: "body_too_large",
    503: "not_ready",
}


class TokenRequired(Unauthorized):
    """401 with ``WWW-Authenticate: Bearer realm="fleet-monitor"`` (the realm quoted)."""

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        """The headers of the 401."""
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", CHALLENGE)]


def batch_body_bytes(settings: Settings) -> int:
    """The largest batch body accepted: ``max_batch`` events of up to 512 bytes each."""
    return settings.max_batch * BATCH_EVENT_BYTES


def _http_error_message(error: HTTPException) -> str:
    if isinstance(error, BatchTooLargeError):
        return str(error.description)
    if isinstance(error, NotFound):
        return f"no such endpoint: {request.path}"
    if isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        return f"method {request.method} is not allowed here; allowed: {allowed}"
    if isinstance(error, RequestEntityTooLarge):
        return f"request body is larger than {request.max_content_length} bytes"
    return error.description or error.name


def _register_error_handlers(app: Flask, metrics: Metrics) -> None:
    """Answer every failure with a JSON ``{"msg"}`` body, counting refusals by reason."""

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
        return reject(error.status, error.reason, str(error))

    @app.errorhandler(RateLimitedError)
    def rate_limited(error: RateLimitedError) -> Response:
        response = reject(429, error.reason, str(error))
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        return response

    @app.errorhandler(JournalError)
    def journal_failed(error: JournalError) -> Response:
        # One template for every refusal: the log's Throttle lets one line through per 10 s
        # (a full disk refuses every write), with a count of the rest. /readyz answers 503
        # degraded meanwhile, so a load balancer sends the writes elsewhere.
        log.error("%s: the change was refused", error)
        response = reject(503, "journal_failed", f"the change was not stored: {error}")
        response.headers["Retry-After"] = "1"
        return response

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


def new_fleet(settings: Settings) -> Fleet:
    """An empty fleet bounded by ``settings`` (devices, history bytes)."""
    budget = HistoryBudget(settings.max_device_bytes, settings.max_fleet_bytes)
    return Fleet(budget=budget, max_devices=settings.max_devices)


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
    access = Access(settings.read_token, settings.device_token, settings.admin_token)
    limiter = None
    if settings.rate_limit is not None:
        limiter = RateLimiter(settings.rate_limit, settings.burst)
    ingest = Ingest(
        fleet,
        metrics,
        clock,
        sent_at_range=SentAtRange(settings.max_sent_at_age, settings.max_sent_at_lead),
        limiter=limiter,
    )
    api = create_api(
        fleet,
        clock,
        offline_after_ns,
        ingest,
        max_batch=settings.max_batch,
        batch_bytes=batch_body_bytes(settings),
        read_budget=ReadBudget(settings.read_budget),
    )

    read_limiter = None
    if settings.read_rate_limit is not None:
        read_limiter = RateLimiter(settings.read_rate_limit, settings.burst)

    @api.before_request
    def check_access() -> None:
        role = _ROLES.get(request.endpoint or "", READ)
        if not access.allows(request.environ, role):
            raise TokenRequired(f"this needs Authorization: Bearer <the {role} token>")
        if not readiness.is_loaded:
            raise ServiceUnavailable(
                "the service is starting: the fleet is not loaded yet", retry_after=1
            )
        if role != READ or read_limiter is None:
            return
        if (wait := read_limiter.take(request.remote_addr or "")) > 0:
            raise RateLimitedError(
                wait,
                f"too many reads from this client: at most {read_limiter.rate:g} a second, "
                f"{read_limiter.burst} at once",
            )

    app.register_blueprint(api)
    app.register_blueprint(create_ops(fleet, readiness, metrics))

    _register_error_handlers(app, metrics)
    observer = RequestObserver(metrics)

    @app.after_request
    def finish(response: Response) -> Response:
        rule = request.url_rule
        rid = observer.finish(
            request.environ, request.path, rule.rule if rule else None, response.status_code
        )
        response.headers[REQUEST_ID_HEADER] = rid
        return response

    app.wsgi_app = fast_device_posts(  # type: ignore[method-assign,assignment]
        app.wsgi_app,
        ingest=ingest,
        readiness=readiness,
        observer=observer,
        max_body_bytes=settings.max_body_bytes,
        access=access,
    )
    return app
