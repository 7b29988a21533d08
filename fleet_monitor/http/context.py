"""What the routes serve: the store and the service's parts, kept on the Flask app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from fleet_monitor.alerts.service import Alerting
from fleet_monitor.domain.readmodels import Expectations
from fleet_monitor.http.metrics import Metrics
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.http.reads import FleetSummaries, ReadBudget
from fleet_monitor.http.writes import Ingest
from fleet_monitor.store.protocol import Store

EXTENSION = "fleet_monitor"
Clock = Callable[[], int]  # now, in nanoseconds since the epoch


@dataclass(frozen=True)
class Context:
    """The service as the routes see it."""

    store: Store
    clock: Clock
    expectations: Expectations
    ingest: Ingest
    metrics: Metrics
    readiness: Readiness
    reads: ReadBudget
    summaries: FleetSummaries
    max_body_bytes: int
    max_batch: int
    batch_bytes: int
    alerting: Alerting

    def install(self, app: Flask) -> None:
        """Keep this context on ``app`` for :func:`context`."""
        app.extensions[EXTENSION] = self


def context() -> Context:
    """The context of the app handling the current request."""
    return context_of(current_app)


def context_of(app: Flask) -> Context:
    """The context kept on ``app``."""
    found: Context = app.extensions[EXTENSION]
    return found
