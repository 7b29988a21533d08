"""When to alert: each rule's devices and groups judged at each evaluation, and the alerts
their changes call for.

A device's episode begins when it turns ``late`` or ``down`` (at the instant its state began:
its latest heartbeat's arrival plus ``expected_every``, plus ``grace`` for down) and is sent
once it has held for the rule's ``hold``, then again every ``repeat`` while it holds; it ends
with ``recovered`` when the device is ``up`` again (only if something was sent). A device in a
maintenance window is judged ``paused``: nothing is sent for it, and an episode under way waits.
While a group rule holds for a group, its devices' alerts are suppressed (counted, not sent).
A device counts against its group from the moment it is late: a whole site falling silent is
seen as one before its devices' own down alerts are due.
Pure: no clock but the ``now`` passed in, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from fleet_monitor.alerts.channels import Alert
from fleet_monitor.alerts.rules import AlertRules, GroupRule, Rule
from fleet_monitor.domain.history import DeviceHead
from fleet_monitor.domain.maintenance import MaintenanceWindow
from fleet_monitor.domain.readmodels import Expectations, expected_of, judge
from fleet_monitor.domain.timestamps import MINUTE_NS, format_rfc3339

BAD = ("late", "down")


@dataclass(frozen=True)
class Outgoing:
    """An alert and the channels it goes to (``suppressed``: counted, not sent)."""

    alert: Alert
    channels: tuple[str, ...]
    suppressed: bool = False


BASELINE = 50  # upload averages a device's p95 is taken over
MIN_BASELINE = 20  # fewer than this: no baseline yet


@dataclass
class _Uploads:
    """What a device had uploaded at the last evaluation, and its latest averages."""

    count: int
    sum_ns: int
    means: deque[int] = field(default_factory=lambda: deque(maxlen=BASELINE))


@dataclass
class _Episode:
    event: str  # the state it is about: late or down (group_down for a group)
    since_ns: int
    sent_ns: int | None = None  # when this state was last sent
    told: bool = False  # whether anything of the episode was sent (then recovered is)
    held_back: bool = False  # suppressed by a group alert (noted once)


class Evaluator:
    """The episodes under way, per rule and device and per group rule and group."""

    def __init__(self, rules: AlertRules, expectations: Expectations) -> None:
        self.rules = rules
        self.expectations = expectations
        self._devices: dict[tuple[int, str], _Episode] = {}
        self._groups: dict[tuple[int, str | None], _Episode] = {}
        self._drifts: dict[tuple[int, str], _Episode] = {}  # clocks off by more than max_skew
        self._uploads: dict[tuple[int, str], _Uploads] = {}  # what each device had uploaded
        self.changed = False  # episodes changed since the last export

    def reset(self) -> None:
        """Forget every episode."""
        self._devices.clear()
        self._groups.clear()
        self._drifts.clear()
        self._uploads.clear()
        self.changed = False

    def export(self) -> dict[str, Any]:
        """The episodes under way, by rule name (for a restart)."""
        self.changed = False
        names = [r.name for r in self.rules.rules]
        groups = [r.name for r in self.rules.group_rules]
        return {
            "devices": [[names[i], device, asdict(e)] for (i, device), e in self._devices.items()],
            "groups": [[groups[i], value, asdict(e)] for (i, value), e in self._groups.items()],
            "drifts": [[names[i], device, asdict(e)] for (i, device), e in self._drifts.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`export` gave, for the rules still in force."""
        names = {r.name: i for i, r in enumerate(self.rules.rules)}
        groups = {r.name: i for i, r in enumerate(self.rules.group_rules)}
        for name, device, fields in state.get("devices", []):
            if name in names:
                self._devices[names[name], device] = _Episode(**fields)
        for name, value, fields in state.get("groups", []):
            if name in groups:
                self._groups[groups[name], value] = _Episode(**fields)
        for name, device, fields in state.get("drifts", []):
            if name in names:
                self._drifts[names[name], device] = _Episode(**fields)

    def evaluate(
        self, heads: Iterable[DeviceHead], now_ns: int, paused_by: Sequence[MaintenanceWindow]
    ) -> list[Outgoing]:
        """The alerts due at ``now_ns`` for the fleet ``heads`` describe."""
        before = (len(self._devices), len(self._groups), len(self._drifts))
        states = [(head, judge(head, now_ns, self.expectations, paused_by)) for head in heads]
        out: list[Outgoing] = []
        down_groups: set[tuple[str, str | None]] = set()
        for index, group_rule in enumerate(self.rules.group_rules):
            out += self._groups_of(index, group_rule, states, now_ns, down_groups)
        for index, rule in enumerate(self.rules.rules):
            for head, state in states:
                if not rule.selects(head.device_id, head.profile):
                    self._forget((index, head.device_id))  # its labels changed: not watched
                    continue
                suppressed = any(
                    (key, head.profile.label(key)) in down_groups for key, _ in down_groups
                )
                out += self._device(index, rule, head, state, now_ns, suppressed=suppressed)
                if state == "paused":  # nothing is sent for a device in maintenance
                    continue
                if "clock_drift" in rule.on:
                    out += self._drift(index, rule, head, now_ns)
                if "upload_slow" in rule.on:
                    out += self._upload(index, rule, head, now_ns)
        present = {head.device_id for head, _ in states}
        for kept in (self._devices, self._drifts, self._uploads):
            for key in [key for key in kept if key[1] not in present]:  # removed devices
                del kept[key]
        self.changed |= bool(out) or before != (
            len(self._devices),
            len(self._groups),
            len(self._drifts),
        )
        return out

    def _forget(self, key: tuple[int, str]) -> None:
        """Drop what is kept of a rule's device (it is no longer watched)."""
        for kept in (self._devices, self._drifts, self._uploads):
            if kept.pop(key, None) is not None:
                self.changed = True

    def _device(
        self, index: int, rule: Rule, head: DeviceHead, state: str, now_ns: int, *, suppressed: bool
    ) -> list[Outgoing]:
        key = (index, head.device_id)
        episode = self._devices.get(key)
        out: list[Outgoing] = []
        if state == "paused":
            return out  # an episode under way waits for the window's end
        if episode is not None and head.seen_ns is not None and head.seen_ns > episode.since_ns:
            # heard from since the outage began: that outage is over, whatever it is now
            del self._devices[key]
            self.changed = True
            if episode.told and "recovered" in rule.on:
                alert = _device_alert("recovered", head, episode.since_ns, now_ns, state="up")
                out.append(Outgoing(alert, rule.channels, suppressed=suppressed))
            episode = None
        if state in BAD and state in rule.on:
            if episode is None or episode.event != state:  # it began, or went on from late
                told = episode is not None and episode.told
                episode = _Episode(state, _since(head, state, self.expectations), told=told)
                self._devices[key] = episode
                self.changed = True
            if episode.sent_ns is None:
                due = now_ns - episode.since_ns >= rule.hold_s * 10**9
            else:
                due = rule.repeat_s > 0 and now_ns - episode.sent_ns >= rule.repeat_s * 10**9
            if not due or (suppressed and episode.held_back):
                return out
            alert = _device_alert(state, head, episode.since_ns, now_ns)
            if suppressed:  # noted once; sent if the device is still down when its group is not
                episode.held_back = True
                return [*out, Outgoing(alert, rule.channels, suppressed=True)]
            episode.sent_ns, episode.told = now_ns, True
            return [*out, Outgoing(alert, rule.channels)]
        if state == "up" and episode is not None:
            del self._devices[key]
            self.changed = True
            if episode.told and "recovered" in rule.on:
                alert = _device_alert("recovered", head, episode.since_ns, now_ns, state="up")
                out.append(Outgoing(alert, rule.channels, suppressed=suppressed))
        return out  # new, or a state the rule does not watch

    def _drift(self, index: int, rule: Rule, head: DeviceHead, now_ns: int) -> list[Outgoing]:
        """``clock_drift`` once the device's clock has been off by more than ``max_skew`` for
        the rule's ``hold``; the episode ends, silently, when its clock is back."""
        key = (index, head.device_id)
        skew = head.skew_ns
        if skew is None or abs(skew) <= self.expectations.max_skew_ns:
            self._drifts.pop(key, None)
            return []
        episode = self._drifts.setdefault(key, _Episode("clock_drift", head.seen_ns or now_ns))
        if episode.told or now_ns - episode.since_ns < rule.hold_s * 10**9:
            return []
        episode.sent_ns, episode.told = now_ns, True
        alert = _device_alert("clock_drift", head, episode.since_ns, now_ns, state="drifting")
        detail = f"its clock is {abs(skew) / 10**9:.1f} s {'ahead' if skew > 0 else 'behind'}"
        return [Outgoing(replace(alert, outage_minutes=None, detail=detail), rule.channels)]

    def _upload(self, index: int, rule: Rule, head: DeviceHead, now_ns: int) -> list[Outgoing]:
        """``upload_slow`` when the uploads that arrived since the last evaluation took, on
        average, longer than ``upload_above`` or than the p95 of the device's previous
        :data:`BASELINE` such averages (once it has :data:`MIN_BASELINE` of them). The uploads
        a device had when first seen are its baseline's start, never alerted on."""
        key = (index, head.device_id)
        seen = self._uploads.get(key)
        if seen is None:
            self._uploads[key] = _Uploads(head.upload_count, head.upload_sum_ns)
            return []
        new = head.upload_count - seen.count
        if new <= 0:
            return []
        mean = (head.upload_sum_ns - seen.sum_ns) // new
        seen.count, seen.sum_ns = head.upload_count, head.upload_sum_ns
        above = rule.upload_above_s is not None and mean > rule.upload_above_s * 10**9
        baseline = sorted(seen.means)
        if rule.upload_p95 and len(baseline) >= MIN_BASELINE:
            above |= mean > baseline[int(0.95 * (len(baseline) - 1))]
        seen.means.append(mean)
        if not above:
            return []
        alert = _device_alert("upload_slow", head, now_ns, now_ns, state="uploading")
        detail = f"{new} upload(s) took {mean / 10**9:.1f} s on average"
        return [Outgoing(replace(alert, outage_minutes=None, detail=detail), rule.channels)]

    def _groups_of(
        self,
        index: int,
        rule: GroupRule,
        states: list[tuple[DeviceHead, str]],
        now_ns: int,
        down_groups: set[tuple[str, str | None]],
    ) -> list[Outgoing]:
        watched: dict[str | None, int] = {}
        down: dict[str | None, int] = {}
        for head, state in states:
            if state in ("new", "paused"):
                continue
            value = head.profile.label(rule.group_by)
            watched[value] = watched.get(value, 0) + 1
            down[value] = down.get(value, 0) + (state in BAD)  # late counts: it comes first
        out = []
        for value in sorted({*watched, *(v for i, v in self._groups if i == index)}, key=str):
            count = watched.get(value, 0)
            share = 100 * down.get(value, 0) / count if count else 0.0
            holds = count >= rule.min_devices and share > rule.threshold
            key = (index, value)
            subject = f"{rule.group_by}:{value}" if value is not None else f"{rule.group_by}:(none)"
            if holds:
                down_groups.add((rule.group_by, value))
                if key not in self._groups:
                    self._groups[key] = _Episode("group_down", now_ns, now_ns, told=True)
                    if "group_down" in rule.on:
                        out.append(
                            Outgoing(
                                _group_alert("group_down", subject, share, now_ns, now_ns),
                                rule.channels,
                            )
                        )
            elif key in self._groups:
                since = self._groups.pop(key).since_ns
                if "group_recovered" in rule.on:
                    out.append(
                        Outgoing(
                            _group_alert("group_recovered", subject, share, since, now_ns),
                            rule.channels,
                        )
                    )
        return out


def _since(head: DeviceHead, state: str, expectations: Expectations) -> int:
    """When the device's ``state`` (late or down) began."""
    every, grace = expected_of(head.profile, expectations)
    seen = head.seen_ns or 0
    return seen + every + (grace if state == "down" else 0)


def _device_alert(
    event: str, head: DeviceHead, since_ns: int, now_ns: int, state: str | None = None
) -> Alert:
    return Alert(
        event,
        head.device_id,
        state or event,
        format_rfc3339(since_ns),
        dict(head.profile.labels),
        outage_minutes=max(0, (now_ns - since_ns) // MINUTE_NS),
        links={"page": f"/devices/{head.device_id}", "api": f"/api/v1/devices/{head.device_id}"},
    )


def _group_alert(event: str, subject: str, share: float, since_ns: int, now_ns: int) -> Alert:
    return Alert(
        event,
        subject,
        "down" if event == "group_down" else "up",
        format_rfc3339(since_ns),
        outage_minutes=max(0, (now_ns - since_ns) // MINUTE_NS),
        links={"page": f"/status/{subject}"},
        detail=f"{share:.1f} % of its watched devices down",
    )
