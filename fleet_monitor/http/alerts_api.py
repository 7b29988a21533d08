"""``GET /api/v1/alerts/rules`` (what the alerts file says, channels without their secrets)
and ``GET /api/v1/alerts/events`` (the delivery log, newest first)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from fleet_monitor.alerts.delivery import LOG_SIZE
from fleet_monitor.http.context import context
from fleet_monitor.http.queries import whole_number
from fleet_monitor.http.writes import API_PREFIX

alerts_api = Blueprint("alerts_api", __name__, url_prefix=API_PREFIX)


@alerts_api.get("/alerts/rules")
def alert_rules() -> Response:
    """The channels, rules and group rules in force."""
    return jsonify(context().alerting.rules.to_json())


@alerts_api.get("/alerts/events")
def alert_events() -> Response:
    """The latest deliveries (``limit``, default 100), newest first, and how many wait."""
    limit = whole_number("limit", 100, LOG_SIZE)
    alerting = context().alerting
    records = alerting.delivery.records()[:limit]
    return jsonify(
        {"pending": alerting.delivery.pending(), "events": [r.to_json() for r in records]}
    )
