"""The ``/api/v1`` routes: parse the request, call the domain, shape the reply."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from fleet_monitor.durations import format_duration
from fleet_monitor.errors import InvalidInputError
from fleet_monitor.fleet import Fleet, is_valid_device_id
from fleet_monitor.idempotency import HEARTBEAT, UPLOAD
from fleet_monitor.ingest import Ingest
from fleet_monitor.limits import ReadBudget
from fleet_monitor.payloads import parse_json_object, parse_timestamp
from fleet_monitor.timestamps import format_minute, format_rfc3339
from fleet_monitor.uploads import UploadAggregate
from fleet_monitor.views import (
    MAX_BUCKETS,
    STATUSES,
    DeviceView,
    Window,
    device_page,
    device_view,
    fleet_summary,
    make_window,
    upload_series,
    uptime_series,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

Clock = Callable[[], int]


class BatchTooLargeError(RequestEntityTooLarge):
    """More events in one batch than allowed (413)."""


IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"[!-~]{1,255}", re.ASCII)
MAX_PAGE = 1000
DEFAULT_PAGE = 100


class _NoContent(Response):
    default_mimetype = None  # no Content-Type header to add, then delete


def no_content() -> Response:
    """An empty ``204 No Content`` reply (built without a Content-Type: -30 us a request)."""
    return _NoContent(status=204)


def _time(unix_ns: int | None) -> str | None:
    return None if unix_ns is None else format_rfc3339(unix_ns)


def _encode_cursor(device_id: str) -> str:
    return base64.urlsafe_b64encode(device_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        device_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        device_id = ""
    if not is_valid_device_id(device_id):
        raise InvalidInputError("cursor is not one this service returned in next", "invalid_query")
    return device_id


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidInputError(
            f"limit must be a whole number from 1 to {MAX_PAGE}", "invalid_query"
        )
    return int(text)


def _status_filter(text: str | None) -> str | None:
    if text is not None and text not in STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}", "invalid_query")
    return text


def _optional_time(name: str) -> int | None:
    text = request.args.get(name)
    return None if text is None else parse_timestamp(name, text, "invalid_query")


def idempotency_key(environ: WSGIEnvironment) -> str | None:
    """The request's ``Idempotency-Key``, checked; None without one."""
    # From the environ: werkzeug's header lookup raises and catches an exception on a miss.
    key = environ.get("HTTP_IDEMPOTENCY_KEY")
    if key is not None and not _KEY.fullmatch(key):
        raise InvalidInputError(
            f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters", "invalid_header"
        )
    return key


def batch_events(body: bytes, max_batch: int) -> list[Any]:
    """The ``events`` list of a batch body; raises InvalidInputError or BatchTooLargeError."""
    events = parse_json_object(body).get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInputError(
            f"events must be a list of 1 to {max_batch} events", "invalid_field"
        )
    if len(events) > max_batch:
        raise BatchTooLargeError(
            f"a batch holds at most {max_batch} events; this one has {len(events)}"
        )
    return events


def _list_item(view: DeviceView) -> dict[str, Any]:
    snapshot = view.snapshot
    return {
        "device_id": snapshot.device_id,
        "online": view.status == "online",
        "status": view.status,
        "last_heartbeat_at": _time(snapshot.last_heartbeat_ns),
        "uptime": snapshot.uptime,
        "avg_upload_time": format_duration(snapshot.avg_upload_ns),
    }


def _detail(view: DeviceView) -> dict[str, Any]:
    snapshot, uploads = view.snapshot, view.snapshot.uploads
    return {
        "device_id": snapshot.device_id,
        "online": view.status == "online",
        "status": view.status,
        "first_heartbeat_at": _time(snapshot.first_heartbeat_ns),
        "last_heartbeat_at": _time(snapshot.last_heartbeat_ns),
        "heartbeat_minutes": snapshot.heartbeat_minutes,
        "uptime": snapshot.uptime,
        "upload_count": uploads.count,
        "avg_upload_time": format_duration(snapshot.avg_upload_ns),
        "avg_upload_time_ns": uploads.avg_ns,
        "min_upload_time_ns": uploads.min_ns,
        "max_upload_time_ns": uploads.max_ns,
    }


def _window_fields(window: Window) -> dict[str, Any]:
    return {"start": _time(window.start_ns), "end": _time(window.end_ns), "step": window.step}


def _upload_fields(aggregate: UploadAggregate) -> dict[str, Any]:
    avg = aggregate.avg_ns
    return {
        "count": aggregate.count,
        "sum_ns": aggregate.sum_ns,
        "min_ns": aggregate.min_ns,
        "max_ns": aggregate.max_ns,
        "avg_ns": avg,
        "avg": None if avg is None else format_duration(avg),
    }


def create_api(
    fleet: Fleet,
    clock: Clock,
    offline_after_ns: int,
    ingest: Ingest,
    *,
    max_batch: int = 1000,
    batch_bytes: int = 512_000,
    read_budget: ReadBudget | None = None,
) -> Blueprint:
    """The blueprint of the ``/api/v1`` routes, serving ``fleet``; writes go through ``ingest``.

    A batch holds up to ``max_batch`` events in up to ``batch_bytes`` bytes; windowed reads
    share ``read_budget``.
    """
    api = Blueprint("api", __name__, url_prefix="/api/v1")
    reads = read_budget or ReadBudget(MAX_BUCKETS)

    def window_query() -> Window:
        return make_window(
            _optional_time("start"), _optional_time("end"), request.args.get("step"), clock()
        )

    # The well-formed case of these two is usually answered by fast_path.py before Flask;
    # these views answer the rest (and everything, when the app is called without it).
    def device_write(kind: str, device_id: str) -> Response:
        fleet.device(device_id)  # 404 before the body is read
        key = idempotency_key(request.environ)
        ingest.write(kind, device_id, request.get_data(cache=False), key)
        return no_content()

    @api.post("/devices/<device_id>/heartbeat")
    def post_heartbeat(device_id: str) -> Response:
        return device_write(HEARTBEAT, device_id)

    @api.post("/devices/<device_id>/stats")
    def post_stats(device_id: str) -> Response:
        return device_write(UPLOAD, device_id)

    @api.post("/events")
    def post_events() -> Response:
        request.max_content_length = batch_bytes
        events = batch_events(request.get_data(cache=False), max_batch)
        rejected = ingest.batch(events)
        return jsonify(
            {
                "accepted": len(events) - len(rejected),
                "rejected": [{"index": r.index, "msg": r.msg} for r in rejected],
            }
        )

    @api.get("/devices/<device_id>/stats")
    def get_stats(device_id: str) -> Response:
        stats = fleet.stats(device_id)
        return jsonify(
            {"uptime": stats.uptime, "avg_upload_time": format_duration(stats.avg_upload_ns)}
        )

    @api.get("/devices")
    def list_devices() -> Response:
        cursor = request.args.get("cursor")
        page, last = device_page(
            fleet,
            clock(),
            offline_after_ns,
            status=_status_filter(request.args.get("status")),
            after=None if cursor is None else _decode_cursor(cursor),
            limit=_limit(request.args.get("limit")),
        )
        return jsonify(
            {
                "devices": [_list_item(view) for view in page],
                "next": None if last is None else _encode_cursor(last),
            }
        )

    @api.get("/devices/<device_id>")
    def get_device(device_id: str) -> Response:
        return jsonify(_detail(device_view(fleet, device_id, clock(), offline_after_ns)))

    @api.put("/devices/<device_id>")
    def put_device(device_id: str) -> Response:
        created = fleet.register(device_id)
        response = jsonify(_detail(device_view(fleet, device_id, clock(), offline_after_ns)))
        response.status_code = 201 if created else 200
        return response

    @api.delete("/devices/<device_id>")
    def delete_device(device_id: str) -> Response:
        fleet.remove(device_id)
        return no_content()

    @api.get("/fleet")
    def get_fleet() -> Response:
        summary = fleet_summary(fleet, clock(), offline_after_ns)
        return jsonify(
            {
                "devices": summary.devices,
                "online": summary.online,
                "offline": summary.offline,
                "never_seen": summary.never_seen,
                "avg_uptime": summary.avg_uptime,
                "upload_count": summary.uploads.count,
                "avg_upload_time": format_duration(summary.uploads.avg_ns or 0),
            }
        )

    @api.get("/devices/<device_id>/uptime")
    def get_uptime(device_id: str) -> Response:
        device = fleet.device(device_id)
        window = window_query()
        with reads.spend(window.step_count):
            total, buckets = uptime_series(device, window)
        return jsonify(
            {
                **_window_fields(window),
                "uptime": total.uptime,
                "buckets": [
                    {
                        "start": format_minute(bucket.first_minute),
                        "minutes": bucket.minutes,
                        "minutes_with_heartbeat": bucket.minutes_with_heartbeat,
                        "uptime": bucket.uptime,
                    }
                    for bucket in buckets
                ],
            }
        )

    @api.get("/devices/<device_id>/uploads")
    def get_uploads(device_id: str) -> Response:
        device = fleet.device(device_id)
        window = window_query()
        with reads.spend(window.step_count):
            total, buckets = upload_series(device, window)
        return jsonify(
            {
                **_window_fields(window),
                **_upload_fields(total),
                "buckets": [
                    {"start": format_minute(first), **_upload_fields(aggregate)}
                    for first, aggregate in buckets
                ],
            }
        )

    return api
