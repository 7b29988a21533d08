"""The Flask application: its parts wired, one error handler, the fast path and timing."""

from __future__ import annotations

import time

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from fleet_monitor.alerts.persist import AlertState
from fleet_monitor.alerts.rules import NO_RULES, AlertsError, load_rules
from fleet_monitor.alerts.service import Alerting
from fleet_monitor.config import ConfigError, Settings
from fleet_monitor.domain.limits import SentAtRange
from fleet_monitor.domain.readmodels import Expectations
from fleet_monitor.domain.timestamps import NS_PER_SECOND
from fleet_monitor.http.alerts_api import alerts_api
from fleet_monitor.http.api import api
from fleet_monitor.http.badges import badges
from fleet_monitor.http.context import Clock, Context
from fleet_monitor.http.errors import (
    INTERNAL_ERROR,
    ErrorReply,
    PageTokenRequiredError,
    TokenRequiredError,
    render,
    reply_for,
)
from fleet_monitor.http.fast_path import fast_device_writes
from fleet_monitor.http.guard import READ, Access, RateLimiter
from fleet_monitor.http.metrics import Metrics
from fleet_monitor.http.observe import REQUEST_ID_HEADER, RequestObserver
from fleet_monitor.http.ops import ops
from fleet_monitor.http.pages import pages
from fleet_monitor.http.readiness import READY, Readiness
from fleet_monitor.http.reads import FleetSummaries, ReadBudget
from fleet_monitor.http.rules import Admission
from fleet_monitor.http.scope import set_scope
from fleet_monitor.http.timing import timed
from fleet_monitor.http.writes import ROLES, Ingest
from fleet_monitor.store.protocol import Store

METRICS_EXTENSION = "fleet_monitor.metrics"
BATCH_EVENT_BYTES = 512
# The reject reason of each HTTP error werkzeug raises (others: http_<code>).
_HTTP_REASONS = {404: "no_such_route", 405: "method_not_allowed", 413: "body_too_large"}


def batch_body_bytes(settings: Settings) -> int:
    """The largest batch body accepted: ``max_batch`` events of up to 512 bytes each."""
    return settings.max_batch * BATCH_EVENT_BYTES


def system_clock() -> int:
    """Now, in nanoseconds since the epoch (tests inject a frozen clock instead)."""
    return time.time_ns()


def _limiter(rate: float | None, burst: int) -> RateLimiter | None:
    return None if rate is None else RateLimiter(rate, burst)


def _http_reply(error: HTTPException) -> ErrorReply:
    """A routing error of werkzeug's (404, 405, …) as the error table would answer it."""
    status = error.code or 500
    if isinstance(error, NotFound):
        msg = f"no such endpoint: {request.path}"
    elif isinstance(error, MethodNotAllowed):
        allowed = ", ".join(sorted(error.valid_methods or ()))
        msg = f"method {request.method} is not allowed here; allowed: {allowed}"
    else:
        msg = error.description or error.name
    headers = tuple(
        (name, value) for name, value in error.get_headers() if name.lower() != "content-type"
    )
    if isinstance(error, MethodNotAllowed):  # werkzeug joins a set: sort it, as the msg does
        headers = (("Allow", ", ".join(sorted(error.valid_methods or ()))),)
    return ErrorReply(status, _HTTP_REASONS.get(status, f"http_{status}"), msg, headers)


def create_app(
    settings: Settings,
    store: Store,
    clock: Clock = system_clock,
    readiness: Readiness | None = None,
) -> Flask:
    """The service's WSGI application serving ``store``, configured by ``settings``.

    ``clock`` gives the service's "now" (for online status and default windows).
    ``readiness`` is the life cycle ``/readyz`` reports; the API answers 503 until the fleet
    is loaded. Without one, the app is ready at once. Requests pass, in order: the timing
    middleware, the fast path (device writes), then Flask (admission, the view, the error
    handler, the access line).
    """
    readiness = readiness or Readiness(READY)
    readiness.add_check(store.problem)
    context = _context(settings, store, clock, readiness)
    admission = Admission(
        Access(settings.read_token, settings.device_token, settings.admin_token),
        readiness,
        _limiter(settings.read_rate_limit, settings.burst),
    )
    observer = RequestObserver(context.metrics)
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # "//" is an unknown path (404 JSON), not a redirect
    app.extensions[METRICS_EXTENSION] = context.metrics
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # "µs" as UTF-8, as Go sends it
    context.install(app)
    _install_hooks(app, admission, observer, settings.public_status)
    app.register_blueprint(api)
    app.register_blueprint(badges)
    app.register_blueprint(alerts_api)
    app.register_blueprint(pages)
    app.register_blueprint(ops)
    app.wsgi_app = timed(  # type: ignore[method-assign,assignment]
        fast_device_writes(
            app.wsgi_app,
            ingest=context.ingest,
            admission=admission,
            observer=observer,
            max_body_bytes=settings.max_body_bytes,
        )
    )
    return app


def _context(settings: Settings, store: Store, clock: Clock, readiness: Readiness) -> Context:
    expectations = Expectations(
        offline_after_ns=settings.offline_after * NS_PER_SECOND,
        expected_every_ns=settings.expected_every * NS_PER_SECOND,
        grace_ns=settings.grace * NS_PER_SECOND,
        max_skew_ns=settings.max_clock_skew * NS_PER_SECOND,
        rules=settings.expect,
    )
    summaries = FleetSummaries(store, clock, expectations, settings.metrics_group_by)
    metrics = Metrics(store, summaries, per_device=settings.metrics_per_device)
    ingest = Ingest(
        store,
        metrics,
        clock,
        sent_at_range=SentAtRange(settings.max_sent_at_age, settings.max_sent_at_lead),
        limiter=_limiter(settings.rate_limit, settings.burst),
    )
    return Context(
        store=store,
        clock=clock,
        expectations=expectations,
        ingest=ingest,
        metrics=metrics,
        readiness=readiness,
        reads=ReadBudget(settings.read_budget),
        summaries=summaries,
        max_body_bytes=settings.max_body_bytes,
        max_batch=settings.max_batch,
        batch_bytes=batch_body_bytes(settings),
        alerting=_alerting(settings, store, clock, expectations, metrics),
    )


def _alerting(
    settings: Settings, store: Store, clock: Clock, expectations: Expectations, metrics: Metrics
) -> Alerting:
    """The alert rules of ``--alerts`` (none without it); raises ConfigError for a file that
    cannot be used."""
    try:
        rules = NO_RULES if settings.alerts is None else load_rules(settings.alerts)
    except AlertsError as error:
        raise ConfigError(str(error)) from None
    keep = settings.data_dir is not None and rules is not NO_RULES
    return Alerting(
        rules,
        store,
        expectations,
        clock,
        every_s=settings.alerts_every,
        count=metrics.alert,
        state=AlertState(settings.data_dir) if keep and settings.data_dir else None,
    )


def _install_hooks(
    app: Flask,
    admission: Admission,
    observer: RequestObserver,
    public: tuple[tuple[str, str], ...] | None,
) -> None:
    """Admission before an API view or a page (``public``: what a page shows without the
    read token, None: nothing), the one error handler, the access line after."""

    @app.before_request
    def admit() -> None:
        if request.blueprint in (api.name, alerts_api.name):
            admission.admit(request.environ, ROLES.get(request.endpoint or "", READ))
        elif request.blueprint == badges.name:  # images of the status: as the pages
            set_scope(admission.admit(request.environ, READ, public=public is not None), public)
        elif request.blueprint == pages.name:
            try:
                full = admission.admit(request.environ, READ, public=public is not None)
            except TokenRequiredError:
                raise PageTokenRequiredError from None
            set_scope(full, public)

    @app.errorhandler(Exception)
    def failed(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            reply = _http_reply(error)
        else:
            reply = reply_for(error, f"{request.method} {request.path}")
        if reply.status != INTERNAL_ERROR.status:
            observer.rejected(reply.reason)
        status, headers, body = render(reply)
        return Response(body, status=status, headers=headers)

    @app.after_request
    def finish(response: Response) -> Response:
        rule = request.url_rule
        rid = observer.finish(
            request.environ, request.path, rule.rule if rule else None, response.status_code
        )
        response.headers[REQUEST_ID_HEADER] = rid
        return response
