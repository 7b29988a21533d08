"""``GET /api/v1/devices/<id>/badge.svg`` and ``GET /api/v1/fleet/badge.svg``: shields-style
SVG badges of the uptime over ``?window=`` (``24h``, ``7d``, ``30d`` or ``all``), cacheable for
a minute (the windows move by the minute)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template, request

from fleet_monitor.domain.badges import (
    BADGE_WINDOWS,
    Badge,
    colour_of,
    device_uptime,
    fleet_uptime,
    uptime_text,
)
from fleet_monitor.domain.profiles import parse_selector
from fleet_monitor.http.context import context
from fleet_monitor.http.queries import one_of
from fleet_monitor.http.scope import scope
from fleet_monitor.http.writes import API_PREFIX

SVG = "image/svg+xml; charset=utf-8"
MAX_AGE_S = 60

badges = Blueprint("badges", __name__, url_prefix=API_PREFIX)


def _window() -> str:
    """``?window=``, default ``24h``."""
    return one_of("window", BADGE_WINDOWS) or "24h"


def _svg(percent: float | None, window: str) -> Response:
    badge = Badge(f"uptime {window}", uptime_text(percent), colour_of(percent))
    response = Response(render_template("badge.svg", badge=badge), mimetype=SVG)
    response.headers["Cache-Control"] = f"max-age={MAX_AGE_S}"
    return response


@badges.get("/devices/<device_id>/badge.svg")
def device_badge(device_id: str) -> Response:
    """The device's uptime badge (404 for a device not in the fleet)."""
    window = _window()
    ctx = context()
    scope().check(ctx.store.snapshot(device_id))
    return _svg(device_uptime(ctx.store, device_id, ctx.clock(), window), window)


@badges.get("/fleet/badge.svg")
def fleet_badge() -> Response:
    """The fleet's (``?label=``: those devices') uptime badge; it reads every device, so
    it spends the read budget as ``GET /fleet`` does."""
    window = _window()
    selector = scope().within(parse_selector(request.args.getlist("label")))
    ctx = context()
    with ctx.reads.spend(ctx.reads.steps):
        percent = fleet_uptime(ctx.store, ctx.clock(), ctx.expectations, window, selector)
    return _svg(percent, window)
