"""The operator's endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fleet_monitor.fleet import Fleet
from fleet_monitor.metrics import CONTENT_TYPE, Metrics
from fleet_monitor.openapi import openapi_document
from fleet_monitor.readiness import Readiness

READYZ_RETRY_AFTER = "1"


def create_ops(fleet: Fleet, readiness: Readiness, metrics: Metrics) -> Blueprint:
    """The blueprint of ``/healthz``, ``/readyz``, ``/metrics`` and ``/api/v1/openapi.json``."""
    ops = Blueprint("ops", __name__)

    @ops.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "devices": len(fleet)})

    @ops.get("/readyz")
    def readyz() -> Response:
        state = readiness.state
        response = jsonify({"status": state, "ready": readiness.is_ready})
        if not readiness.is_ready:
            response.status_code = 503
            response.headers["Retry-After"] = READYZ_RETRY_AFTER
        return response

    @ops.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE)

    @ops.get("/api/v1/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document())

    return ops
