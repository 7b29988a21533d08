"""Read models of the fleet: status, pages, fleet summary, and windowed series.

Every one is computed from device snapshots and the service clock (``now``, nanoseconds since
the epoch), through the few reads of :class:`FleetReads`, so it is the same on every store and
testable with a frozen clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fleet_monitor.domain.errors import InvalidInputError, UnknownDeviceError
from fleet_monitor.domain.group_index import GroupTotals
from fleet_monitor.domain.history import DeviceHead, DeviceSnapshot
from fleet_monitor.domain.maintenance import MaintenanceWindow, minutes_in
from fleet_monitor.domain.profiles import ExpectationRule, Profile
from fleet_monitor.domain.timestamps import MIN_UNIX_NS, MINUTE_NS
from fleet_monitor.domain.uploads import UploadAggregate
from fleet_monitor.domain.uptime import sla_uptime_percent

STEP_MINUTES = {"1m": 1, "5m": 5, "1h": 60, "1d": 1440}
DEFAULT_STEP = "1h"
DEFAULT_SPAN_NS = 24 * 60 * MINUTE_NS
MAX_BUCKETS = 10_000
STATUSES = ("online", "offline", "never")
STATES = ("new", "up", "late", "down", "paused")
SCAN_LIMIT = 5_000  # devices one filtered page may look at


class FleetReads(Protocol):
    """The reads the read models make of a store (see
    :class:`~fleet_monitor.store.protocol.Store`)."""

    def ids_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` ids in sorted order, each greater than ``after``."""

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """One device's counters; raises UnknownDeviceError."""

    def snapshots(self) -> Iterator[DeviceSnapshot]:
        """Every device's counters."""

    def heartbeat_counts(self, device_id: str, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """For each ``(start, end)``, how many heartbeat minutes ``start <= m < end``."""

    def upload_aggregates(
        self, device_id: str, ranges: Sequence[tuple[int, int]]
    ) -> list[UploadAggregate]:
        """For each ``(start, end)``, the uploads of minutes ``start <= m < end``."""

    def heartbeat_counts_many(
        self, requests: Sequence[tuple[str, Sequence[tuple[int, int]]]]
    ) -> list[list[int]]:
        """:meth:`heartbeat_counts` of many devices at once (zeros for one not in the
        fleet)."""

    def maintenance(self) -> list[MaintenanceWindow]:
        """The maintenance windows."""

    def heads(self) -> Iterator[DeviceHead]:
        """What each device's state is judged on, cheaper than its snapshot."""

    def group_totals(self, key: str, now: int, windows: Sequence[int]) -> GroupTotals | None:
        """For each value of label ``key`` (None: devices without it), its devices' totals
        over windows of ``windows`` minutes ending at minute ``now``; None when the store
        keeps no index of ``key`` (the caller counts device by device)."""

    def heartbeat_chunks(self, device_id: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Each chunk of the device's bitmap that holds a minute ``start <= m < end``, in
        order, as ``(index, bits)``: bit ``i`` of ``bits`` is minute
        ``index * CHUNK_MINUTES + i`` (chunks never written are left out); raises
        UnknownDeviceError."""


@dataclass(frozen=True)
class Expectations:
    """How devices are judged: ``offline_after`` for the SPEC-era ``status`` (on ``sent_at``);
    ``expected_every`` and ``grace`` for ``state`` (on when the latest heartbeat was
    received); ``max_skew`` for the clock drift a device is flagged for (nanoseconds)."""

    offline_after_ns: int = 120 * 10**9
    expected_every_ns: int = 60 * 10**9
    grace_ns: int = 60 * 10**9
    max_skew_ns: int = 60 * 10**9
    rules: tuple[ExpectationRule, ...] = ()  # by label, before the fleet's


def expected_of(profile: Profile, expectations: Expectations) -> tuple[int, int]:
    """A device's ``expected_every`` and ``grace`` (ns): its own, else those of the first
    ``--expect`` rule its labels match, else the fleet's."""
    every = profile.expected_every_s
    grace = profile.grace_s
    if every is None or grace is None:
        for rule in expectations.rules:
            if profile.matches(rule.selector):
                every = rule.expected_every_s if every is None else every
                grace = rule.grace_s if grace is None else grace
                break
    return (
        expectations.expected_every_ns if every is None else every * 10**9,
        expectations.grace_ns if grace is None else grace * 10**9,
    )


def active_windows(store: FleetReads, now_ns: int) -> list[MaintenanceWindow]:
    """The maintenance windows ``now`` is inside."""
    return [window for window in store.maintenance() if window.active(now_ns)]


def state_of(
    snapshot: DeviceSnapshot,
    now_ns: int,
    expectations: Expectations,
    paused_by: Sequence[MaintenanceWindow] = (),
) -> str:
    """``paused`` inside one of ``paused_by`` (the active maintenance windows) that covers
    it; else ``new`` before its first heartbeat is received; ``up`` until ``expected_every``
    after the latest was received, ``late`` until ``grace`` more has passed, then ``down``. A
    device with heartbeats but no receipt (history kept from before receipts were recorded) is
    judged on its latest ``sent_at``."""
    return judge(DeviceHead.of(snapshot.device_id, snapshot), now_ns, expectations, paused_by)


def judge(
    head: DeviceHead,
    now_ns: int,
    expectations: Expectations,
    paused_by: Sequence[MaintenanceWindow] = (),
) -> str:
    """The state of the device ``head`` describes (see :func:`state_of`)."""
    device_id, seen, profile = head.device_id, head.seen_ns, head.profile
    if paused_by and any(window.applies_to(device_id, profile) for window in paused_by):
        return "paused"
    if seen is None:
        return "new"
    silent = now_ns - seen
    every, grace = expected_of(profile, expectations)
    if silent <= every:
        return "up"
    return "late" if silent <= every + grace else "down"


def drifts(snapshot: DeviceSnapshot, expectations: Expectations) -> bool:
    """Whether the device's clock was off by more than ``max_skew`` at its latest heartbeat."""
    skew = snapshot.clock_skew_ns
    return skew is not None and abs(skew) > expectations.max_skew_ns


def sla_uptime(
    store: FleetReads, snapshot: DeviceSnapshot, windows: Sequence[MaintenanceWindow]
) -> float:
    """The device's uptime without its maintenance minutes (between its first and last
    heartbeat minute): the SPEC's ``uptime`` is never changed by maintenance."""
    first, last = snapshot.first_minute, snapshot.last_minute
    if first is None or last is None:
        return 0.0
    runs = minutes_in(windows, snapshot.device_id, snapshot.profile, first, last)
    seen = sum(store.heartbeat_counts(snapshot.device_id, runs)) if runs else 0
    excluded = sum(end - start for start, end in runs)
    return sla_uptime_percent(snapshot.heartbeat_minutes, first, last, excluded, seen)


def status_of(last_heartbeat_ns: int | None, now_ns: int, offline_after_ns: int) -> str:
    """``never`` without heartbeats; ``online`` if the latest is at most ``offline_after`` old."""
    if last_heartbeat_ns is None:
        return "never"
    return "online" if now_ns - last_heartbeat_ns <= offline_after_ns else "offline"


@dataclass(frozen=True)
class DeviceView:
    """A device's snapshot with its status, state and clock drift at the time of the view."""

    snapshot: DeviceSnapshot
    status: str
    state: str
    clock_drift: bool
    expected_every_ns: int  # the device's own, else the fleet's
    grace_ns: int


def view_of(
    snapshot: DeviceSnapshot,
    now_ns: int,
    expectations: Expectations,
    paused_by: Sequence[MaintenanceWindow] = (),
) -> DeviceView:
    """How ``snapshot``'s device is judged at ``now_ns`` (``paused_by``: the active
    maintenance windows)."""
    return DeviceView(
        snapshot,
        status_of(snapshot.last_heartbeat_ns, now_ns, expectations.offline_after_ns),
        state_of(snapshot, now_ns, expectations, paused_by),
        drifts(snapshot, expectations),
        *expected_of(snapshot.profile, expectations),
    )


def device_view(
    store: FleetReads, device_id: str, now_ns: int, expectations: Expectations
) -> DeviceView:
    """The current view of one device; raises UnknownDeviceError."""
    snapshot = store.snapshot(device_id)
    return view_of(snapshot, now_ns, expectations, active_windows(store, now_ns))


def device_page(
    store: FleetReads,
    now_ns: int,
    expectations: Expectations,
    *,
    status: str | None,
    state: str | None = None,
    selector: tuple[tuple[str, str], ...] = (),
    after: str | None,
    limit: int,
) -> tuple[list[DeviceView], str | None]:
    """Up to ``limit`` devices sorted by id after ``after``, filtered by ``status``,
    ``state`` and the labels of ``selector``.

    Returns the page and the id to continue after, or None when no device follows it. A
    filtered page looks at no more than :data:`SCAN_LIMIT` devices: past that it is returned
    as it is (perhaps empty) with its cursor, so a rare status never costs a scan of the fleet
    in one request.
    """
    page: list[DeviceView] = []
    cursor, scanned = after, 0
    paused_by = active_windows(store, now_ns)
    while len(page) < limit and scanned < SCAN_LIMIT:
        ids = store.ids_after(cursor, min(max(limit, 100), SCAN_LIMIT - scanned))
        if not ids:
            return page, None
        for device_id in ids:
            cursor, scanned = device_id, scanned + 1
            try:
                view = view_of(store.snapshot(device_id), now_ns, expectations, paused_by)
            except UnknownDeviceError:  # removed since the ids were read
                continue
            if (
                (status is None or view.status == status)
                and (state is None or view.state == state)
                and view.snapshot.profile.matches(selector)
            ):
                page.append(view)
                if len(page) == limit:
                    break
    more = bool(store.ids_after(cursor, 1))
    return page, cursor if more else None


@dataclass(frozen=True)
class FleetSummary:
    """Counts by status and by state, mean uptime of the devices seen, and the fleet's upload
    aggregate."""

    devices: int
    online: int
    offline: int
    never_seen: int
    avg_uptime: float
    uploads: UploadAggregate
    states: dict[str, int]  # by each of STATES
    # with a group_by key: for each of its values (None: devices without it), counts by state
    groups: dict[str | None, dict[str, int]] = field(default_factory=dict)


def fleet_summary(
    store: FleetReads,
    now_ns: int,
    expectations: Expectations,
    selector: tuple[tuple[str, str], ...] = (),
    group_by: str | None = None,
) -> FleetSummary:
    """The summary over every device (with the labels of ``selector``), and with
    ``group_by`` the states counted per value of that label.

    ``avg_uptime`` is the mean uptime of the devices that sent a heartbeat (0.0 if none),
    summed with ``math.fsum`` so the result does not depend on the devices' order.
    """
    counts = dict.fromkeys(STATUSES, 0)
    states = dict.fromkeys(STATES, 0)
    paused_by = active_windows(store, now_ns)
    groups: dict[str | None, dict[str, int]] = {}
    uptimes: list[float] = []
    upload_count = upload_sum = 0
    low: list[int] = []
    high: list[int] = []
    for snapshot in store.snapshots():
        if selector and not snapshot.profile.matches(selector):
            continue
        status = status_of(snapshot.last_heartbeat_ns, now_ns, expectations.offline_after_ns)
        counts[status] += 1
        state = state_of(snapshot, now_ns, expectations, paused_by)
        states[state] += 1
        if group_by is not None:
            value = snapshot.profile.label(group_by)
            if value not in groups:
                groups[value] = dict.fromkeys(STATES, 0)
            groups[value][state] += 1
        if status != "never":
            uptimes.append(snapshot.uptime)
        if snapshot.upload_count:
            upload_count += snapshot.upload_count
            upload_sum += snapshot.upload_sum_ns
            low.append(snapshot.upload_min_ns)  # type: ignore[arg-type]  # set with a count
            high.append(snapshot.upload_max_ns)  # type: ignore[arg-type]
    return FleetSummary(
        devices=sum(counts.values()),
        online=counts["online"],
        offline=counts["offline"],
        never_seen=counts["never"],
        avg_uptime=math.fsum(uptimes) / len(uptimes) if uptimes else 0.0,
        uploads=UploadAggregate(
            upload_count, upload_sum, min(low, default=None), max(high, default=None)
        ),
        states=states,
        groups=groups,
    )


@dataclass(frozen=True)
class Window:
    """A time window cut into steps. Minute ``m`` belongs to it if ``m``'s start is in
    ``[start, end)``: minutes ``first_minute`` to ``end_minute - 1``."""

    start_ns: int
    end_ns: int
    step: str

    @property
    def step_minutes(self) -> int:
        """The step's length in minutes."""
        return STEP_MINUTES[self.step]

    @property
    def first_minute(self) -> int:
        """The first minute in the window."""
        return -(-self.start_ns // MINUTE_NS)

    @property
    def end_minute(self) -> int:
        """The first minute after the window."""
        return -(-self.end_ns // MINUTE_NS)

    @property
    def step_count(self) -> int:
        """How many steps (buckets) the window holds."""
        return -(-(self.end_minute - self.first_minute) // self.step_minutes)

    def buckets(self) -> list[tuple[int, int]]:
        """Each step as ``(first minute, end minute)``; the last one may be shorter."""
        step, end = self.step_minutes, self.end_minute
        return [(m, min(m + step, end)) for m in range(self.first_minute, end, step)]


def make_window(start_ns: int | None, end_ns: int | None, step: str | None, now_ns: int) -> Window:
    """The window asked for: ``end`` defaults to now, ``start`` to 24 h before ``end`` (or
    ``0001-01-01T00:00:00Z`` if that is later).

    Raises InvalidInputError for an unknown step, ``end <= start`` or over 10 000 buckets.
    """
    end = now_ns if end_ns is None else end_ns
    # The default start never falls before year 1, where no instant can be written.
    start = max(end - DEFAULT_SPAN_NS, MIN_UNIX_NS) if start_ns is None else start_ns
    step = DEFAULT_STEP if step is None else step
    if step not in STEP_MINUTES:
        raise InvalidInputError(f"step must be one of {', '.join(STEP_MINUTES)}", "invalid_query")
    if end <= start:
        raise InvalidInputError("end must be after start", "invalid_query")
    window = Window(start, end, step)
    if (count := window.step_count) > MAX_BUCKETS:
        raise InvalidInputError(
            f"the window holds {count} steps of {step}; at most {MAX_BUCKETS} are allowed: "
            "use a larger step or a shorter window",
            "invalid_query",
        )
    return window


@dataclass(frozen=True)
class UptimeBucket:
    """Minutes of a step inside the device's heartbeat span, and how many had a heartbeat."""

    first_minute: int
    minutes: int
    minutes_with_heartbeat: int

    @property
    def uptime(self) -> float | None:
        """Percent of ``minutes`` with a heartbeat; None when the step is outside the span."""
        return 100 * self.minutes_with_heartbeat / self.minutes if self.minutes else None


def uptime_series(
    store: FleetReads, device_id: str, window: Window, *, watched_until: int | None = None
) -> tuple[UptimeBucket, list[UptimeBucket]]:
    """The whole window's uptime bucket and one per step; raises UnknownDeviceError.

    A step counts only its minutes between the device's first and last heartbeat minute
    (inclusive), or with ``watched_until`` (a minute: now) up to that minute too, so the
    minutes since a silent device's last heartbeat count as down; its heartbeats are counted
    from the bitmap, all steps in one read.
    """
    snapshot = store.snapshot(device_id)
    first, last = snapshot.first_minute, snapshot.last_minute
    if last is not None and watched_until is not None:
        last = max(last, watched_until - 1)
    steps = window.buckets()
    clipped = [
        (max(start, first), min(end, last + 1))
        if first is not None and last is not None
        else (0, 0)
        for start, end in steps
    ]
    counts = store.heartbeat_counts(device_id, [r for r in clipped if r[1] > r[0]])
    found = iter(counts)
    buckets = [
        UptimeBucket(start, high - low, next(found)) if high > low else UptimeBucket(start, 0, 0)
        for (start, _), (low, high) in zip(steps, clipped, strict=True)
    ]
    total = UptimeBucket(
        window.first_minute,
        sum(b.minutes for b in buckets),
        sum(b.minutes_with_heartbeat for b in buckets),
    )
    return total, buckets


def upload_series(
    store: FleetReads, device_id: str, window: Window
) -> tuple[UploadAggregate, list[tuple[int, UploadAggregate]]]:
    """The whole window's upload aggregate and ``(first minute, aggregate)`` per step."""
    steps = window.buckets()
    aggregates = store.upload_aggregates(device_id, steps)
    total = UploadAggregate()
    for aggregate in aggregates:
        total += aggregate
    return total, [
        (start, aggregate) for (start, _), aggregate in zip(steps, aggregates, strict=True)
    ]
