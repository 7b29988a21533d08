"""When alerts are due: a device's down, its repeats and its recovery, holds, late, paused
devices, and group alerts suppressing their devices' alerts."""

from __future__ import annotations

from fleet_monitor.alerts.rules import AlertRules, GroupRule, Rule
from fleet_monitor.alerts.states import Evaluator, Outgoing
from fleet_monitor.domain.history import DeviceHead
from fleet_monitor.domain.maintenance import MaintenanceWindow
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.readmodels import Expectations

S = 10**9
T0 = 1_800_000_000 * S
EXPECT = Expectations(expected_every_ns=60 * S, grace_ns=60 * S)


def rules(*device_rules: Rule, groups: tuple[GroupRule, ...] = ()) -> AlertRules:
    return AlertRules({}, device_rules, groups)


def rule(**changes: object) -> Rule:
    fields: dict[str, object] = {
        "name": "r",
        "labels": (),
        "devices": (),
        "on": ("down", "recovered"),
        "hold_s": 0,
        "repeat_s": 0,
        "channels": ("ops",),
    }
    fields.update(changes)
    return Rule(**fields)  # type: ignore[arg-type]


def head(device: str, seen_s: float | None, site: str = "a") -> DeviceHead:
    seen = None if seen_s is None else T0 + int(seen_s * S)
    return DeviceHead(device, seen, Profile((("site", site),)))


def events(out: list[Outgoing]) -> list[tuple[str, str, bool]]:
    return [(o.alert.event, o.alert.subject, o.suppressed) for o in out]


def test_down_once_then_repeats_then_recovered_once() -> None:
    evaluator = Evaluator(rules(rule(repeat_s=600)), EXPECT)

    def at(now_s: float, seen_s: float) -> list[tuple[str, str, bool]]:
        return events(evaluator.evaluate([head("cam", seen_s)], T0 + int(now_s * S), ()))

    assert at(60, 0) == []  # up
    assert at(100, 0) == []  # late: not watched
    assert at(121, 0) == [("down", "cam", False)]
    assert at(180, 0) == []
    assert at(720, 0) == []  # 599 s after it was sent
    assert at(721, 0) == [("down", "cam", False)]  # the repeat
    assert at(800, 790) == [("recovered", "cam", False)]
    assert at(900, 850) == []


def test_the_alert_says_since_when_and_how_long() -> None:
    evaluator = Evaluator(rules(rule()), EXPECT)
    (out,) = evaluator.evaluate([head("cam", 0)], T0 + 300 * S, ())
    assert len(out.alert.id) == 16
    assert {**out.alert.to_json(), "id": "x"} == {
        "id": "x",
        "event": "down",
        "subject": "cam",
        "state": "down",
        "since": "2027-01-15T08:02:00Z",
        "labels": {"site": "a"},
        "outage_minutes": 3,
        "links": {"page": "/devices/cam", "api": "/api/v1/devices/cam"},
        "detail": "",
    }
    assert out.channels == ("ops",)


def test_a_hold_waits_and_late_can_be_watched() -> None:
    evaluator = Evaluator(rules(rule(on=("late", "down", "recovered"), hold_s=30)), EXPECT)

    def at(now_s: float) -> list[tuple[str, str, bool]]:
        return events(evaluator.evaluate([head("cam", 0)], T0 + int(now_s * S), ()))

    assert at(61) == []  # late for 1 s
    assert at(90) == [("late", "cam", False)]  # held 30 s
    assert at(125) == []  # down for 5 s
    assert at(150) == [("down", "cam", False)]
    assert events(evaluator.evaluate([head("cam", 149)], T0 + 150 * S, ())) == [
        ("recovered", "cam", False)
    ]


def test_nothing_is_sent_for_a_short_lapse_or_a_new_device() -> None:
    evaluator = Evaluator(rules(rule(hold_s=60)), EXPECT)
    assert evaluator.evaluate([head("cam", 0), head("new", None)], T0 + 150 * S, ()) == []
    assert evaluator.evaluate([head("cam", 160)], T0 + 161 * S, ()) == []  # back before the hold


def test_a_device_in_maintenance_is_silent() -> None:
    window = MaintenanceWindow("w", (), ("cam",), T0, T0 + 600 * S, None, None, "upgrade")
    evaluator = Evaluator(rules(rule()), EXPECT)
    assert evaluator.evaluate([head("cam", 0)], T0 + 300 * S, [window]) == []
    assert events(evaluator.evaluate([head("cam", 0)], T0 + 601 * S, ())) == [
        ("down", "cam", False)
    ]


def test_a_group_down_is_one_alert_and_holds_back_its_devices() -> None:
    group = GroupRule("sites", "site", 50.0, 2, ("group_down", "group_recovered"), ("ops",))
    evaluator = Evaluator(rules(rule(), groups=(group,)), EXPECT)
    fleet = [head(f"a{n}", 0 if n < 6 else 290) for n in range(10)] + [head("b0", 0, "b")]
    out = events(evaluator.evaluate(fleet, T0 + 300 * S, ()))
    assert out[0] == ("group_down", "site:a", False)  # b alone is too small to be judged
    assert sorted(out[1:]) == [("down", f"a{n}", True) for n in range(6)] + [("down", "b0", False)]
    assert evaluator.evaluate(fleet, T0 + 310 * S, ()) == []  # held back once, not again
    # a0 still down when the group is not: its alert is sent then; the others were never told
    back = [head("a0", 0)] + [head(f"a{n}", 350) for n in range(1, 10)] + [head("b0", 0, "b")]
    out = events(evaluator.evaluate(back, T0 + 360 * S, ()))
    assert out == [("group_recovered", "site:a", False), ("down", "a0", False)]


def test_late_devices_count_against_their_group_before_their_own_alerts() -> None:
    """A site falling silent: its devices go late first, so the group is down before any of
    their down alerts is due, and none of those is sent."""
    group = GroupRule("sites", "site", 50.0, 2, ("group_down",), ("ops",))
    evaluator = Evaluator(rules(rule(), groups=(group,)), EXPECT)
    fleet = [head(f"a{n}", n) for n in range(4)]  # silent from seconds 0 to 3
    assert events(evaluator.evaluate(fleet, T0 + 62 * S, ())) == []  # 2 of 4 late: not over 50 %
    assert events(evaluator.evaluate(fleet, T0 + 63 * S, ())) == [("group_down", "site:a", False)]
    out = events(evaluator.evaluate(fleet, T0 + 125 * S, ()))
    assert out == [("down", f"a{n}", True) for n in range(4)]


def test_a_drifting_clock_is_told_once() -> None:
    evaluator = Evaluator(rules(rule(on=("clock_drift",), hold_s=10)), EXPECT)  # max_skew 60 s

    def at(now_s: float, skew_s: float) -> list[tuple[str, str, bool]]:
        device = DeviceHead("cam", T0 + int(now_s * S), Profile(), int(skew_s * S))
        return events(evaluator.evaluate([device], T0 + int(now_s * S), ()))

    assert at(1, 59) == []  # within the bound
    assert at(2, -90) == []  # off, not yet for 10 s
    assert at(12, -90) == [("clock_drift", "cam", False)]
    assert at(20, -95) == []  # told once
    assert at(30, 1) == []  # back: the episode ends
    assert at(31, 120) == [] and at(41, 120) == [("clock_drift", "cam", False)]
    (out,) = evaluator.evaluate([DeviceHead("x", T0, Profile(), -90 * S)], T0 + 20 * S, ())
    assert (out.alert.detail, out.alert.since) == (
        "its clock is 90.0 s behind",  # since its drifting heartbeat arrived, 20 s ago
        "2027-01-15T08:00:00Z",
    )


def uploads(device: str, count: int, total_s: float) -> DeviceHead:
    return DeviceHead(device, T0, Profile(), None, count, int(total_s * S))


def test_slow_uploads_above_a_threshold() -> None:
    evaluator = Evaluator(rules(rule(on=("upload_slow",), upload_above_s=30.0)), EXPECT)

    def at(count: int, total_s: float) -> list[tuple[str, str, bool]]:
        return events(evaluator.evaluate([uploads("cam", count, total_s)], T0, ()))

    assert at(5, 500) == []  # first seen: its history is not alerted on
    assert at(6, 520) == []  # 20 s
    assert at(7, 560) == [("upload_slow", "cam", False)]  # 40 s
    assert at(7, 560) == []  # nothing new
    assert at(9, 610) == []  # two uploads, 25 s on average
    (out,) = evaluator.evaluate([uploads("cam", 10, 650.5)], T0, ())
    assert out.alert.detail == "1 upload(s) took 40.5 s on average"


def test_slow_uploads_above_the_device_s_own_p95() -> None:
    evaluator = Evaluator(rules(rule(on=("upload_slow",), upload_p95=True)), EXPECT)
    count, total = 0, 0.0
    found = []
    for n, seconds in enumerate([10.0] * 19 + [12.0, 11.0, 30.0, 11.0]):
        count, total = count + 1, total + seconds
        found.append((n, events(evaluator.evaluate([uploads("cam", count, total)], T0, ()))))
    slow = [n for n, out in found if out]
    assert slow == [21]  # 30 s above the p95 of the 20 before it; 12 s was not (too few yet)


def test_a_device_gone_from_the_fleet_is_forgotten() -> None:
    evaluator = Evaluator(
        rules(rule(on=("down", "recovered", "upload_slow"), upload_above_s=1.0)), EXPECT
    )
    assert len(evaluator.evaluate([head("cam", 0)], T0 + 300 * S, ())) == 1
    assert evaluator.export()["devices"]
    assert evaluator.evaluate([], T0 + 400 * S, ()) == []
    assert evaluator.export() == {"devices": [], "groups": [], "drifts": []}
    assert evaluator.changed is False  # export() just said so


def test_an_outage_ends_when_the_device_is_heard_from_whatever_its_state_now() -> None:
    """Back, then late again before an evaluation saw it up: the first outage is over
    (recovered), and the next one is told as new."""
    evaluator = Evaluator(rules(rule()), EXPECT)
    assert events(evaluator.evaluate([head("cam", 0)], T0 + 130 * S, ())) == [
        ("down", "cam", False)
    ]
    out = events(evaluator.evaluate([head("cam", 200)], T0 + 270 * S, ()))  # heard at 200, late
    assert out == [("recovered", "cam", False)]
    assert events(evaluator.evaluate([head("cam", 200)], T0 + 330 * S, ())) == [
        ("down", "cam", False)
    ]


def test_a_device_a_rule_no_longer_selects_is_forgotten_and_paused_means_silent() -> None:
    evaluator = Evaluator(rules(rule(labels=(("site", "a"),), on=("down", "clock_drift"))), EXPECT)
    assert len(evaluator.evaluate([head("cam", 0)], T0 + 130 * S, ())) == 1
    moved = DeviceHead("cam", T0, Profile((("site", "b"),)))
    assert evaluator.evaluate([moved], T0 + 140 * S, ()) == []
    assert evaluator.export()["devices"] == []  # back in site a: a new outage, told again
    assert len(evaluator.evaluate([head("cam", 0)], T0 + 150 * S, ())) == 1
    window = MaintenanceWindow("w", (), ("x",), T0, T0 + 600 * S, None, None, "")
    drifting = DeviceHead("x", T0 + 100 * S, Profile((("site", "a"),)), 300 * S)
    assert evaluator.evaluate([drifting], T0 + 130 * S, [window]) == []  # paused: no drift
