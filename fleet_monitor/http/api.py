"""The ``/api/v1`` routes, each a named function: parse the query, call the read models or the
ingest, shape the reply (:mod:`fleet_monitor.http.replies`). No rule lives here."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request

from fleet_monitor.domain.bitmaps import CHUNK_MINUTES
from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.events import parse_json_object
from fleet_monitor.domain.groups import MAX_SITE_WINDOW, group_summaries, site_outages
from fleet_monitor.domain.maintenance import (
    UnknownWindowError,
    check_window_id,
    minutes_in,
    parse_window,
)
from fleet_monitor.domain.outages import outage_page
from fleet_monitor.domain.profiles import EMPTY, parse_label_key, parse_profile, parse_selector
from fleet_monitor.domain.readmodels import (
    STATES,
    STATUSES,
    Window,
    device_page,
    device_view,
    fleet_summary,
    make_window,
    sla_uptime,
    upload_series,
    uptime_series,
)
from fleet_monitor.domain.timestamps import MIN_UNIX_NS, MINUTE_NS, format_minute
from fleet_monitor.http.context import context
from fleet_monitor.http.errors import BodyTooLargeError
from fleet_monitor.http.queries import (
    bad_cursor,
    decode_cursor,
    decoded,
    encode_cursor,
    one_of,
    optional_time,
    page_size,
    whole_number,
)
from fleet_monitor.http.replies import (
    DeviceDetail,
    device_detail,
    fleet_reply,
    group_reply,
    list_item,
    outages_reply,
    site_outages_reply,
    stats_reply,
    time_text,
    upload_figures,
    upload_step,
    uptime_step,
    window_fields,
    window_reply,
)
from fleet_monitor.http.rules import read_body
from fleet_monitor.http.writes import (
    API_PREFIX,
    DEVICE_WRITES,
    require_device,
    write_from_request,
)

MIN_MINUTE = MIN_UNIX_NS // MINUTE_NS  # 0001-01-01T00:00Z

api = Blueprint("api", __name__, url_prefix=API_PREFIX)


class _NoContent(Response):
    default_mimetype = None  # no Content-Type header to add, then delete


def no_content() -> Response:
    """An empty ``204 No Content`` reply (built without a Content-Type: -30 us a request)."""
    return _NoContent(status=204)


def _window() -> Window:
    return make_window(
        optional_time("start"), optional_time("end"), request.args.get("step"), context().clock()
    )


# --- device writes (the fast path answers most of them before Flask) ------------------------


def device_write(kind: str, device_id: str) -> Response:
    """One device write through the ingest; 204."""
    ctx = context()
    write_from_request(ctx.ingest, kind, device_id, request.environ, ctx.max_body_bytes)
    return no_content()


def _register_writes() -> None:
    for write in DEVICE_WRITES:

        def view(device_id: str, kind: str = write.kind) -> Response:
            return device_write(kind, device_id)

        api.add_url_rule(write.rule, write.endpoint, view, methods=["POST"])


_register_writes()


@api.post("/events")
def post_events() -> Response:
    """A batch of events: ``{"accepted": n, "rejected": [{"index", "msg"}]}``."""
    ctx = context()
    events = parse_json_object(read_body(request.environ, ctx.batch_bytes)).get("events")
    if not isinstance(events, list) or not events:
        raise InvalidInputError(
            f"events must be a list of 1 to {ctx.max_batch} events", "invalid_field"
        )
    if len(events) > ctx.max_batch:
        raise BodyTooLargeError(
            f"a batch holds at most {ctx.max_batch} events; this one has {len(events)}"
        )
    rejected = ctx.ingest.batch(events)
    return jsonify(
        {
            "accepted": len(events) - len(rejected),
            "rejected": [{"index": r.index, "msg": r.msg} for r in rejected],
        }
    )


# --- reads ----------------------------------------------------------------------------------


@api.get("/devices/<device_id>/stats")
def get_stats(device_id: str) -> Response:
    """The SPEC's uptime and average upload time of one device."""
    return jsonify(stats_reply(context().store.snapshot(device_id)))


@api.get("/devices")
def list_devices() -> Response:
    """Devices sorted by id, a page at a time."""
    ctx = context()
    cursor = request.args.get("cursor")
    page, last = device_page(
        ctx.store,
        ctx.clock(),
        ctx.expectations,
        status=one_of("status", STATUSES),
        state=one_of("state", STATES),
        selector=parse_selector(request.args.getlist("label")),
        after=None if cursor is None else decode_cursor(cursor),
        limit=page_size(),
    )
    return jsonify(
        {
            "devices": [list_item(view) for view in page],
            "next": None if last is None else encode_cursor(last),
        }
    )


def _detail(device_id: str, *, budget: bool = True) -> DeviceDetail:
    """One device's detail, with its SLA uptime (without maintenance minutes) and the totals
    of its outages over its whole history (under the read budget, unless ``budget`` is off:
    a registration's answer is never refused after the registration)."""
    ctx = context()
    now = ctx.clock()
    view = device_view(ctx.store, device_id, now, ctx.expectations)
    snapshot, windows = view.snapshot, ctx.store.maintenance()
    first, now_minute = snapshot.first_minute or 0, now // MINUTE_NS
    chunks = max(1, (now_minute - first) // CHUNK_MINUTES + 1)
    with ctx.reads.spend(min(chunks, ctx.reads.steps) if budget else 0):  # the whole bitmap
        history = outage_page(
            ctx.store,
            device_id,
            (snapshot.first_minute, snapshot.last_minute),
            now_minute,
            (first, now_minute),
            at_least=1,
            after=None,
            limit=0,
            maintained=minutes_in(windows, device_id, snapshot.profile, first, now_minute)
            if snapshot.first_minute is not None
            else [],
        )
    return device_detail(view, sla_uptime(ctx.store, snapshot, windows), history.totals)


@api.get("/devices/<device_id>")
def get_device(device_id: str) -> Response:
    """One device's detail."""
    return jsonify(_detail(device_id))


@api.put("/devices/<device_id>")
def put_device(device_id: str) -> Response:
    """Register a device: 201 when new, 200 when it was there; a JSON body (``labels``,
    ``expected_every``, ``grace``) sets its profile, checked before anything changes."""
    ctx = context()
    body = read_body(request.environ, ctx.max_body_bytes)
    fields = parse_json_object(body) if body else None  # no body: no profile change
    if fields is not None:
        parse_profile(fields, EMPTY)  # a bad body changes nothing, not even the registry
    created = ctx.store.register(device_id)
    if fields:
        current = ctx.store.snapshot(device_id).profile
        ctx.store.set_profile(device_id, parse_profile(fields, current))
    response = jsonify(_detail(device_id, budget=False))
    response.status_code = 201 if created else 200
    return response


@api.delete("/devices/<device_id>")
def delete_device(device_id: str) -> Response:
    """Remove a device and its history: 204."""
    context().store.remove(device_id)
    return no_content()


@api.get("/fleet")
def get_fleet() -> Response:
    """Counts by status, mean uptime, the fleet's average upload time; with ``group_by``,
    the fleet grouped by that label instead."""
    ctx = context()
    key = request.args.get("group_by")
    selector = parse_selector(request.args.getlist("label"))
    if key is None and not selector:
        return jsonify(fleet_reply(ctx.summaries.get()))  # shared by concurrent requests
    with ctx.reads.spend(ctx.reads.steps):  # it reads every device: one at a time
        if key is None:
            summary = fleet_summary(ctx.store, ctx.clock(), ctx.expectations, selector)
            return jsonify(fleet_reply(summary))
        key = parse_label_key(key)
        groups = group_summaries(ctx.store, ctx.clock(), ctx.expectations, key, selector)
    return jsonify({"group_by": key, "groups": [group_reply(group) for group in groups]})


def _threshold() -> float:
    """The ``threshold`` query: a percent from 0 to 100 (default 50), below 100."""
    text = request.args.get("threshold", "50")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 100:  # NaN fails too
        raise InvalidInputError("threshold must be a percent from 0 to under 100", "invalid_query")
    return value


@api.get("/fleet/outages")
def get_site_outages() -> Response:
    """The minutes in which more than ``threshold`` percent of a group's devices were down:
    a site's outage, not N devices' outages."""
    ctx = context()
    text = request.args.get("group_by")
    if text is None:
        raise InvalidInputError("group_by is required: a label key", "invalid_query")
    key = parse_label_key(text)
    selector = parse_selector(request.args.getlist("label"))
    threshold = _threshold()
    now_minute = ctx.clock() // MINUTE_NS
    start_ns, end_ns = optional_time("start"), optional_time("end")
    end = min(now_minute, -(-end_ns // MINUTE_NS)) if end_ns is not None else now_minute
    # the default start never falls before year 1, where no instant can be written
    start = -(-start_ns // MINUTE_NS) if start_ns is not None else max(end - 1440, MIN_MINUTE)
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise InvalidInputError("end must be after start", "invalid_query")
    if end - start > MAX_SITE_WINDOW:
        raise InvalidInputError(
            f"the window holds {end - start} minutes; at most {MAX_SITE_WINDOW} (31 days)",
            "invalid_query",
        )
    with ctx.reads.spend(ctx.reads.steps):  # it reads every device: one at a time
        groups = site_outages(ctx.store, key, (start, max(start, end)), threshold, selector)
    return jsonify(
        {
            "group_by": key,
            "threshold": threshold,
            "start": time_text(start_ns) if start_ns is not None else format_minute(start),
            "end": time_text(end_ns) if end_ns is not None else format_minute(end),
            "groups": [site_outages_reply(group) for group in groups],
        }
    )


# --- maintenance windows ----------------------------------------------------------------------


@api.post("/maintenance")
def post_maintenance() -> Response:
    """A new maintenance window: 201 with it (and its id)."""
    ctx = context()
    now = ctx.clock()
    window = parse_window(parse_json_object(read_body(request.environ, ctx.max_body_bytes)), now)
    reply = window_reply(window, now)  # built first: nothing is kept that cannot be shown
    ctx.store.add_maintenance(window)
    response = jsonify(reply)
    response.status_code = 201
    return response


@api.get("/maintenance")
def list_maintenance() -> Response:
    """Every maintenance window, by start, each with whether it is active now."""
    ctx = context()
    now = ctx.clock()
    return jsonify({"windows": [window_reply(w, now) for w in ctx.store.maintenance()]})


@api.delete("/maintenance/<window_id>")
def delete_maintenance(window_id: str) -> Response:
    """Remove a window: 204, or 404."""
    if not context().store.remove_maintenance(check_window_id(window_id)):
        raise UnknownWindowError(window_id)
    return no_content()


def _windowed(device_id: str, reply: Callable[[Window], dict[str, object]]) -> Response:
    """A windowed read: the device (404) before the query, then ``reply`` within the read
    budget."""
    ctx = context()
    require_device(ctx.store, device_id)
    window = _window()
    with ctx.reads.spend(window.step_count):
        return jsonify({**window_fields(window), **reply(window)})


MAX_OUTAGE_MINUTES = 10**9  # the largest ``min`` (about 1,900 years)


def _minute_cursor(cursor: str | None, low: int, high: int) -> int | None:
    """The minute an outages ``next`` cursor stands for; it must lie in ``[low, high)``."""
    if cursor is None:
        return None
    text = decoded(cursor)
    number = text[1:].removeprefix("-")  # minutes before 1970 are negative
    if not (text[:1] == "m" and number.isascii() and number.isdigit() and len(number) < 20):
        raise bad_cursor()
    number = text[1:]
    if not low <= int(number) < high:
        raise bad_cursor()
    return int(number)


@api.get("/devices/<device_id>/outages")
def get_outages(device_id: str) -> Response:
    """The device's outages in a window (default: its first heartbeat to now), oldest first,
    a page at a time, with the window's totals."""
    ctx = context()
    snapshot = ctx.store.snapshot(device_id)
    now_minute = ctx.clock() // MINUTE_NS
    start_ns, end_ns = optional_time("start"), optional_time("end")
    start = -(-start_ns // MINUTE_NS) if start_ns is not None else snapshot.first_minute or 0
    end = -(-end_ns // MINUTE_NS) if end_ns is not None else now_minute
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise InvalidInputError("end must be after start", "invalid_query")
    at_least = whole_number("min", 1, MAX_OUTAGE_MINUTES)
    limit = page_size()
    after = _minute_cursor(request.args.get("cursor"), start, max(end, start + 1))
    span = (snapshot.first_minute, snapshot.last_minute)
    chunks = max(1, (min(end, now_minute) - start) // CHUNK_MINUTES + 1)
    low = max(start, snapshot.first_minute or start)
    maintained = minutes_in(
        ctx.store.maintenance(), device_id, snapshot.profile, low, max(low, min(end, now_minute))
    )
    with ctx.reads.spend(min(chunks, ctx.reads.steps)):
        page = outage_page(
            ctx.store,
            device_id,
            span,
            now_minute,
            (start, end),
            at_least=at_least,
            after=after,
            limit=limit,
            maintained=maintained,
        )
    following = page.next_minute
    edges = (
        time_text(start_ns) if start_ns is not None else format_minute(start),
        time_text(end_ns) if end_ns is not None else format_minute(end),
    )
    return jsonify(
        {
            **outages_reply(device_id, page, at_least, edges),
            "next": None if following is None else encode_cursor(f"m{following}"),
        }
    )


@api.get("/devices/<device_id>/uptime")
def get_uptime(device_id: str) -> Response:
    """Uptime per step over a window."""

    def reply(window: Window) -> dict[str, object]:
        total, buckets = uptime_series(context().store, device_id, window)
        return {"uptime": total.uptime, "buckets": [uptime_step(b) for b in buckets]}

    return _windowed(device_id, reply)


@api.get("/devices/<device_id>/uploads")
def get_uploads(device_id: str) -> Response:
    """Upload count, sum, min, max and mean per step over a window."""

    def reply(window: Window) -> dict[str, object]:
        total, buckets = upload_series(context().store, device_id, window)
        steps = [upload_step(first, aggregate) for first, aggregate in buckets]
        return {**upload_figures(total), "buckets": steps}

    return _windowed(device_id, reply)
