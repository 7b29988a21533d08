"""The ``/api/v1`` device API: parse the request, call the fleet, shape the reply."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from fleet_monitor.durations import format_duration
from fleet_monitor.fleet import Fleet
from fleet_monitor.payloads import parse_heartbeat, parse_json_object, parse_upload


def no_content() -> Response:
    """An empty ``204 No Content`` reply."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def create_api(fleet: Fleet) -> Blueprint:
    """The blueprint of the device API, serving ``fleet``."""
    api = Blueprint("api", __name__, url_prefix="/api/v1")

    @api.post("/devices/<device_id>/heartbeat")
    def post_heartbeat(device_id: str) -> Response:
        device = fleet.device(device_id)
        heartbeat = parse_heartbeat(parse_json_object(request.get_data(cache=False)))
        device.add_heartbeat(heartbeat.sent_at_ns)
        return no_content()

    @api.post("/devices/<device_id>/stats")
    def post_stats(device_id: str) -> Response:
        device = fleet.device(device_id)
        upload = parse_upload(parse_json_object(request.get_data(cache=False)))
        device.add_upload(upload.upload_time_ns)
        return no_content()

    @api.get("/devices/<device_id>/stats")
    def get_stats(device_id: str) -> Response:
        stats = fleet.stats(device_id)
        return jsonify(
            {"uptime": stats.uptime, "avg_upload_time": format_duration(stats.avg_upload_ns)}
        )

    return api
