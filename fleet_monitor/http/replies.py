"""The JSON replies of the API, typed, built from the read models.

Field order is the wire order (replies are written without sorting keys).
"""

from __future__ import annotations

from typing import TypedDict

from fleet_monitor.domain.durations import format_duration
from fleet_monitor.domain.groups import WINDOWS, GroupOutages, GroupSummary
from fleet_monitor.domain.history import DeviceSnapshot
from fleet_monitor.domain.maintenance import MaintenanceWindow
from fleet_monitor.domain.outages import OutagePage, OutageTotals
from fleet_monitor.domain.readmodels import DeviceView, FleetSummary, UptimeBucket, Window
from fleet_monitor.domain.timestamps import NS_PER_SECOND, format_minute, format_rfc3339
from fleet_monitor.domain.uploads import UploadAggregate


class StatsReply(TypedDict):
    """``GET /devices/{id}/stats``: the SPEC's reply."""

    uptime: float
    avg_upload_time: str


class ListItem(TypedDict):
    """One device of ``GET /devices``."""

    device_id: str
    online: bool
    status: str
    state: str
    labels: dict[str, str]
    last_heartbeat_at: str | None
    uptime: float
    avg_upload_time: str


class DeviceDetail(TypedDict):
    """``GET /devices/{id}`` (and ``PUT``)."""

    device_id: str
    online: bool
    status: str
    state: str
    labels: dict[str, str]
    expected_every: int
    grace: int
    last_received_at: str | None
    clock_skew_ns: int | None
    clock_drift: bool
    first_heartbeat_at: str | None
    last_heartbeat_at: str | None
    heartbeat_minutes: int
    uptime: float
    sla_uptime: float
    outages: OutageTotalsReply
    upload_count: int
    avg_upload_time: str
    avg_upload_time_ns: int | None
    min_upload_time_ns: int | None
    max_upload_time_ns: int | None


class FleetReply(TypedDict):
    """``GET /fleet``."""

    devices: int
    online: int
    offline: int
    never_seen: int
    avg_uptime: float
    upload_count: int
    avg_upload_time: str
    states: dict[str, int]


class UptimeStep(TypedDict):
    """One step of an uptime series."""

    start: str
    minutes: int
    minutes_with_heartbeat: int
    uptime: float | None


class UploadFigures(TypedDict):
    """An upload aggregate on the wire."""

    count: int
    sum_ns: int
    min_ns: int | None
    max_ns: int | None
    avg_ns: int | None
    avg: str | None


class OutageItem(TypedDict):
    """One outage: its first minute, the minute it ended (None while open), its minutes."""

    start: str
    end: str | None
    minutes: int
    open: bool
    maintenance_minutes: int
    in_maintenance: bool


class OutageTotalsReply(TypedDict):
    """The totals of a window's outages."""

    count: int
    minutes: int
    longest_minutes: int
    mtbf_minutes: float | None
    mttr_minutes: float | None
    maintenance_minutes: int


class OutagesReply(TypedDict):
    """``GET /devices/{id}/outages`` without its ``next`` cursor."""

    device_id: str
    start: str | None
    end: str | None
    min: int
    outages: list[OutageItem]
    totals: OutageTotalsReply


def time_text(unix_ns: int | None) -> str | None:
    """An instant in RFC 3339 (UTC), or None."""
    return None if unix_ns is None else format_rfc3339(unix_ns)


def stats_reply(snapshot: DeviceSnapshot) -> StatsReply:
    """The SPEC's stats of one device."""
    return {"uptime": snapshot.uptime, "avg_upload_time": format_duration(snapshot.avg_upload_ns)}


def list_item(view: DeviceView) -> ListItem:
    """One device as the list shows it."""
    snapshot = view.snapshot
    return {
        "device_id": snapshot.device_id,
        "online": view.status == "online",
        "status": view.status,
        "state": view.state,
        "labels": dict(snapshot.profile.labels),
        "last_heartbeat_at": time_text(snapshot.last_heartbeat_ns),
        "uptime": snapshot.uptime,
        "avg_upload_time": format_duration(snapshot.avg_upload_ns),
    }


def device_detail(view: DeviceView, sla_uptime: float, outages: OutageTotals) -> DeviceDetail:
    """One device in full (``sla_uptime``: its uptime without maintenance minutes;
    ``outages``: the totals of its outages from its first heartbeat to now)."""
    snapshot, uploads = view.snapshot, view.snapshot.uploads
    return {
        "device_id": snapshot.device_id,
        "online": view.status == "online",
        "status": view.status,
        "state": view.state,
        "labels": dict(snapshot.profile.labels),
        "expected_every": view.expected_every_ns // NS_PER_SECOND,
        "grace": view.grace_ns // NS_PER_SECOND,
        "last_received_at": time_text(snapshot.last_received_ns),
        "clock_skew_ns": snapshot.clock_skew_ns,
        "clock_drift": view.clock_drift,
        "first_heartbeat_at": time_text(snapshot.first_heartbeat_ns),
        "last_heartbeat_at": time_text(snapshot.last_heartbeat_ns),
        "heartbeat_minutes": snapshot.heartbeat_minutes,
        "uptime": snapshot.uptime,
        "sla_uptime": sla_uptime,
        "outages": totals_reply(outages),
        "upload_count": uploads.count,
        "avg_upload_time": format_duration(snapshot.avg_upload_ns),
        "avg_upload_time_ns": uploads.avg_ns,
        "min_upload_time_ns": uploads.min_ns,
        "max_upload_time_ns": uploads.max_ns,
    }


def outages_reply(
    device_id: str, page: OutagePage, at_least: int, edges: tuple[str | None, str | None]
) -> OutagesReply:
    """A page of outages with the window's totals; ``edges`` the window's start and end as
    asked for (or as defaulted)."""
    totals = page.totals
    return {
        "device_id": device_id,
        "start": edges[0],
        "end": edges[1],
        "min": at_least,
        "outages": [
            {
                "start": format_minute(outage.start),
                "end": None if outage.open else format_minute(outage.end),
                "minutes": outage.minutes,
                "open": outage.open,
                "maintenance_minutes": outage.maintenance_minutes,
                "in_maintenance": outage.maintenance_minutes == outage.minutes,
            }
            for outage in page.outages
        ],
        "totals": totals_reply(totals),
    }


def totals_reply(totals: OutageTotals) -> OutageTotalsReply:
    """The totals of outages in a window."""
    return {
        "count": totals.count,
        "minutes": totals.minutes,
        "longest_minutes": totals.longest,
        "mtbf_minutes": totals.mtbf_minutes,
        "mttr_minutes": totals.mttr_minutes,
        "maintenance_minutes": totals.maintenance_minutes,
    }


def fleet_reply(summary: FleetSummary) -> FleetReply:
    """The fleet summary."""
    return {
        "devices": summary.devices,
        "online": summary.online,
        "offline": summary.offline,
        "never_seen": summary.never_seen,
        "avg_uptime": summary.avg_uptime,
        "upload_count": summary.uploads.count,
        "avg_upload_time": format_duration(summary.uploads.avg_ns or 0),
        "states": summary.states,
    }


def group_reply(group: GroupSummary) -> dict[str, object]:
    """One group of ``GET /fleet?group_by=``."""
    return {
        "value": group.value,
        "devices": group.devices,
        "states": group.states,
        "uptime": {name: group.uptime(name) for name, _ in WINDOWS},
        "downtime_minutes": {name: group.downtime_minutes(name) for name, _ in WINDOWS},
    }


def site_outages_reply(group: GroupOutages) -> dict[str, object]:
    """One group of ``GET /fleet/outages``."""
    return {
        "value": group.value,
        "devices": group.devices,
        "outages": [
            {
                "start": format_minute(outage.start),
                "end": format_minute(outage.end),
                "minutes": outage.end - outage.start,
                "peak_down_percent": outage.peak,
            }
            for outage in group.outages
        ],
    }


def window_reply(window: MaintenanceWindow, now_ns: int) -> dict[str, object]:
    """A maintenance window as the API shows it, with whether it is active at ``now_ns``."""
    return {
        "id": window.id,
        "selector": dict(window.selector),
        "devices": list(window.devices),
        "start": time_text(window.start_ns),
        "end": time_text(window.end_ns),
        "cron": window.cron,
        "duration": window.duration_s,
        "reason": window.reason,
        "active": window.active(now_ns),
    }


def window_fields(window: Window) -> dict[str, str | None]:
    """The window's start, end and step, as every series reply begins."""
    return {
        "start": time_text(window.start_ns),
        "end": time_text(window.end_ns),
        "step": window.step,
    }


def uptime_step(bucket: UptimeBucket) -> UptimeStep:
    """One step of an uptime series."""
    return {
        "start": format_minute(bucket.first_minute),
        "minutes": bucket.minutes,
        "minutes_with_heartbeat": bucket.minutes_with_heartbeat,
        "uptime": bucket.uptime,
    }


def upload_figures(aggregate: UploadAggregate) -> UploadFigures:
    """An upload aggregate's figures."""
    avg = aggregate.avg_ns
    return {
        "count": aggregate.count,
        "sum_ns": aggregate.sum_ns,
        "min_ns": aggregate.min_ns,
        "max_ns": aggregate.max_ns,
        "avg_ns": avg,
        "avg": None if avg is None else format_duration(avg),
    }


def upload_step(first_minute: int, aggregate: UploadAggregate) -> dict[str, object]:
    """One step of an upload series, its start first."""
    return {"start": format_minute(first_minute), **upload_figures(aggregate)}
