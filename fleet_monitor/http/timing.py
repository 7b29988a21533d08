"""Request timing: a WSGI middleware stamping each request's arrival for the access log."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

STARTED = "fleet_monitor.started_ns"  # environ key: perf_counter_ns() when the request arrived


def timed(app: WSGIApplication) -> WSGIApplication:
    """``app`` with ``environ[STARTED]`` set before it runs."""

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED] = time.perf_counter_ns()
        return app(environ, start_response)

    return wsgi


def elapsed_seconds(environ: WSGIEnvironment) -> float:
    """Seconds since the request arrived (0.0 when it was not stamped)."""
    started = environ.get(STARTED)
    return 0.0 if started is None else (time.perf_counter_ns() - started) / 1e9
