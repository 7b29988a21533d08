"""The operator's endpoints: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fleet_monitor.fleet import Fleet
from fleet_monitor.journal import Journal
from fleet_monitor.metrics import CONTENT_TYPE, Metrics
from fleet_monitor.openapi import openapi_document
from fleet_monitor.readiness import READY, Readiness

READYZ_RETRY_AFTER = "1"


def journal_problem(fleet: Fleet) -> str | None:
    """Why the fleet's journal cannot take writes now (None: it can, or there is none).

    The journal is found through the fleet (attached once the state is loaded), since the
    server wires neither to the readiness.
    """
    journal = getattr(fleet, "_journal", None)
    return journal.health.problem() if isinstance(journal, Journal) else None


def create_ops(fleet: Fleet, readiness: Readiness, metrics: Metrics) -> Blueprint:
    """The blueprint of ``/healthz``, ``/readyz``, ``/metrics`` and ``/api/v1/openapi.json``."""
    ops = Blueprint("ops", __name__)
    readiness.add_check(lambda: journal_problem(fleet))

    @ops.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok", "devices": len(fleet)})

    @ops.get("/readyz")
    def readyz() -> Response:
        state, reason = readiness.status()
        body: dict[str, object] = {"status": state, "ready": state == READY}
        if reason is not None:
            body["reason"] = reason
        response = jsonify(body)
        if state != READY:
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
