"""Maintenance windows: when devices are expected to be silent.

A window picks devices by label selector or by id, and is one-off (``start`` to ``end``) or
recurring (a cron expression in UTC, each occurrence lasting ``duration`` seconds, from
``start`` until ``end`` if given). A device inside an active window is ``paused``; its outages'
minutes inside windows are marked, and ``sla_uptime`` leaves them out. Occurrences are computed
by ``cronsim`` (the cron library Healthchecks.io wrote for the same job).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice, pairwise
from typing import Any

from cronsim import CronSim, CronSimError

from fleet_monitor.domain.devices import device_id_problem
from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.events import parse_timestamp
from fleet_monitor.domain.profiles import Profile, parse_selector
from fleet_monitor.domain.timestamps import MIN_UNIX_NS, MINUTE_NS, NS_PER_SECOND

MAX_WINDOWS = 1000  # in the fleet
MAX_DEVICES = 1000  # named by one window
MAX_REASON = 200
MAX_DURATION_S = 366 * 86400
MAX_OCCURRENCES = 10_000  # of one recurring window in one read: later ones are not seen
_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS = ("selector", "devices", "start", "end", "cron", "duration", "reason")


@dataclass(frozen=True)
class MaintenanceWindow:
    """One window (times in nanoseconds since the epoch; ``end`` None: open-ended)."""

    id: str
    selector: tuple[tuple[str, str], ...]
    devices: tuple[str, ...]
    start_ns: int
    end_ns: int | None
    cron: str | None
    duration_s: int | None
    reason: str

    def applies_to(self, device_id: str, profile: Profile) -> bool:
        """Whether the window covers this device."""
        if self.devices:
            return device_id in self.devices
        return profile.matches(self.selector)

    def intervals(self, low_ns: int, high_ns: int) -> list[tuple[int, int]]:
        """The window's spans ``(start, end)`` that overlap ``[low, high)``, in order (at most
        :data:`MAX_OCCURRENCES` of a recurring one)."""
        first = max(low_ns, self.start_ns)
        last = high_ns if self.end_ns is None else min(high_ns, self.end_ns)
        if self.cron is None:
            end = self.end_ns if self.end_ns is not None else high_ns
            return [(self.start_ns, end)] if first < last else []
        assert self.duration_s is not None
        length = self.duration_s * NS_PER_SECOND
        found: list[tuple[int, int]] = []
        begin = max(first - length, self.start_ns)
        for start in _occurrences(self.cron, begin):
            if start >= last or len(found) == MAX_OCCURRENCES:
                break
            if start + length > first and start >= self.start_ns:
                found.append((start, start + length))
        return found

    def active(self, now_ns: int) -> bool:
        """Whether ``now`` is inside the window: for a recurring one, its latest occurrence
        (one step of cron backwards, however often it fires) has not ended yet."""
        if now_ns < self.start_ns:
            return False
        if self.cron is None:
            return bool(self.intervals(now_ns, now_ns + 1))
        assert self.duration_s is not None
        latest = _latest(self.cron, now_ns)
        if latest is not None and self.end_ns is not None and latest >= self.end_ns:
            latest = _latest(self.cron, self.end_ns - NS_PER_SECOND)  # the last one it has
        if latest is None:
            return False
        started = latest >= self.start_ns and (self.end_ns is None or latest < self.end_ns)
        return started and now_ns < latest + self.duration_s * NS_PER_SECOND

    def to_json(self) -> dict[str, Any]:
        """The window as stored and as the API shows it."""
        return {
            "id": self.id,
            "selector": dict(self.selector),
            "devices": list(self.devices),
            "start": self.start_ns,
            "end": self.end_ns,
            "cron": self.cron,
            "duration": self.duration_s,
            "reason": self.reason,
        }

    def dumps(self) -> str:
        """The window as compact JSON text, for storage."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def loads(text: str) -> MaintenanceWindow:
        """A window :meth:`dumps` wrote (unchecked: it was valid when stored)."""
        fields = json.loads(text)
        return MaintenanceWindow(
            fields["id"],
            tuple(sorted(fields["selector"].items())),
            tuple(fields["devices"]),
            fields["start"],
            fields["end"],
            fields["cron"],
            fields["duration"],
            fields["reason"],
        )


def by_start(windows: Iterable[MaintenanceWindow]) -> list[MaintenanceWindow]:
    """``windows`` in the order every store lists them: by start, then id."""
    return sorted(windows, key=lambda window: (window.start_ns, window.id))


def _datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(max(ns, MIN_UNIX_NS) // NS_PER_SECOND, UTC)


def _occurrences(cron: str, from_ns: int) -> Iterator[int]:
    """The instants (ns) ``cron`` fires at from ``from_ns`` on, until year 9999 ends."""
    # CronSim gives the occurrences after the instant it is given: one second before
    moments = CronSim(cron, _datetime(from_ns - NS_PER_SECOND))
    while True:
        try:
            moment = next(moments)
        except (OverflowError, ValueError):  # past year 9999
            return
        yield _ns(moment)


def _latest(cron: str, at_ns: int) -> int | None:
    """The last instant (ns) at or before ``at_ns`` that ``cron`` fires at (None before
    year 1)."""
    try:  # CronSim gives the occurrences before the instant it is given: one second after
        return _ns(next(CronSim(cron, _datetime(at_ns + NS_PER_SECOND), reverse=True)))
    except (OverflowError, ValueError):
        return None


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * NS_PER_SECOND


def _fail(message: str) -> InvalidInputError:
    return InvalidInputError(message, "invalid_field")


def _time(fields: dict[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"{name} must be an RFC 3339 date-time string")
    return parse_timestamp(name, value)


def _devices(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_DEVICES:
        raise _fail(f"devices must be a list of 1 to {MAX_DEVICES} device ids")
    for device_id in value:
        if not isinstance(device_id, str) or device_id_problem(device_id) is not None:
            raise _fail(f"devices: {device_id!r} is not a valid device id")
    return tuple(sorted(set(value)))


def _selector(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        raise _fail('selector must be an object of labels, e.g. {"site": "paris"}')
    texts = [f"{key}:{text}" if isinstance(text, str) else "" for key, text in value.items()]
    try:
        return tuple(sorted(parse_selector(texts)))
    except InvalidInputError as error:
        raise _fail(f"selector: {error}") from None


def _check_recurring(cron: object, duration: object, start: int) -> int:
    """``start``, once ``cron`` and ``duration`` make a valid recurring window from it: a
    cron expression that fires after ``start``, at most once an hour (so that a read never
    walks more than a few occurrences an hour of history), and a duration from a minute to a
    year; else InvalidInputError."""
    if not isinstance(cron, str):
        raise _fail('cron must be a cron expression string, e.g. "0 2 * * 0"')
    try:
        CronSim(cron, _datetime(start))
    except CronSimError as error:
        raise _fail(f"cron {cron!r} is not a cron expression: {error}") from None
    if type(duration) is not int or not 60 <= duration <= MAX_DURATION_S:
        raise _fail(f"duration must be a whole number of seconds from 60 to {MAX_DURATION_S}")
    firsts = list(islice(_occurrences(cron, start), 100))
    if not firsts:
        raise _fail(f"cron {cron!r} never fires after start (before the end of year 9999)")
    if any(later - earlier < 3600 * NS_PER_SECOND for earlier, later in pairwise(firsts)):
        raise _fail(f"cron {cron!r} fires more than once an hour: a window recurs at most hourly")
    return start


def parse_window(fields: dict[str, Any], now_ns: int) -> MaintenanceWindow:
    """A new window from a ``POST /maintenance`` body; raises InvalidInputError naming the
    problem."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise _fail(f"unknown field {unknown[0]!r}: a window takes {', '.join(_FIELDS)}")
    if ("selector" in fields) == ("devices" in fields):
        raise _fail("a window needs a selector (labels) or devices (ids), not both")
    selector = _selector(fields["selector"]) if "selector" in fields else ()
    devices = _devices(fields["devices"]) if "devices" in fields else ()
    reason = fields.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise _fail(f"reason must be a string of at most {MAX_REASON} characters")
    start, end = _time(fields, "start"), _time(fields, "end")
    cron, duration = fields.get("cron"), fields.get("duration")
    if cron is None:
        if duration is not None:
            raise _fail("duration belongs to a recurring window (with cron)")
        if start is None or end is None:
            raise _fail("a one-off window needs start and end")
    else:
        start = _check_recurring(cron, duration, now_ns if start is None else start)
    assert start is not None
    if end is not None and end <= start:
        raise _fail("end must be after start")
    return MaintenanceWindow(
        uuid.uuid4().hex, selector, devices, start, end, cron, duration, reason
    )


class UnknownWindowError(LookupError):
    """No maintenance window has this id (404)."""


def check_window_id(text: str) -> str:
    """A window id as the API gives them (else UnknownWindowError: nothing has that id)."""
    if not _ID.fullmatch(text):
        raise UnknownWindowError(text)
    return text


def minutes_in(
    windows: Iterable[MaintenanceWindow], device_id: str, profile: Profile, low: int, high: int
) -> list[tuple[int, int]]:
    """The minutes ``low <= m < high`` inside the device's windows, as sorted, merged runs
    ``(first, end)``: a minute counts when it starts inside a window."""
    runs: list[tuple[int, int]] = []
    for window in windows:
        if not window.applies_to(device_id, profile):
            continue
        for start, end in window.intervals(low * MINUTE_NS, high * MINUTE_NS):
            first = max(low, -(-start // MINUTE_NS))
            stop = min(high, -(-end // MINUTE_NS))
            if first < stop:
                runs.append((first, stop))
    runs.sort()
    merged: list[tuple[int, int]] = []
    for first, stop in runs:
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((first, stop))
    return merged
