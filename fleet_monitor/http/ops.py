"""The operator's endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import contextlib

from flask import Blueprint, Response, jsonify

from fleet_monitor.domain.errors import StoreUnavailableError
from fleet_monitor.http.context import context
from fleet_monitor.http.errors import RETRY_SOON
from fleet_monitor.http.metrics import CONTENT_TYPE
from fleet_monitor.http.openapi import openapi_document
from fleet_monitor.http.readiness import READY

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> Response:
    """Liveness: 200 whenever the process serves, even when its store cannot be reached
    (then without the device count): restarting the process would not bring the engine
    back."""
    body: dict[str, object] = {"status": "ok"}
    with contextlib.suppress(StoreUnavailableError):
        body["devices"] = len(context().store)
    return jsonify(body)


@ops.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 once loaded and able to store changes; 503 with why otherwise."""
    state, reason = context().readiness.status()
    body: dict[str, object] = {"status": state, "ready": state == READY}
    if reason is not None:
        body["reason"] = reason
    response = jsonify(body)
    if state != READY:
        response.status_code = 503
        response.headers["Retry-After"] = RETRY_SOON
    return response


@ops.get("/metrics")
def prometheus_metrics() -> Response:
    """Every metric in the Prometheus text format."""
    return Response(context().metrics.exposition(), content_type=CONTENT_TYPE)


@ops.get("/api/v1/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of every endpoint."""
    return jsonify(openapi_document())
