"""The group index against sums over each device's bitmap."""

from __future__ import annotations

import random

import pytest

from fleet_monitor.domain.bitmaps import MinuteSet
from fleet_monitor.domain.group_index import (
    FUTURE_MINUTES,
    MAX_GROUPS,
    PAST_MARGIN,
    GroupIndex,
    TooManyGroupsError,
    WindowTotals,
)
from fleet_monitor.domain.profiles import Profile

NOW = 10_000_000
WINDOWS = (60, 1440, 7200)


def site(value: str | None) -> Profile:
    return Profile(() if value is None else (("site", value),))


def expected(
    devices: dict[str, tuple[Profile, MinuteSet]], now: int
) -> dict[str | None, list[WindowTotals]]:
    found: dict[str | None, list[WindowTotals]] = {}
    for profile, minutes in devices.values():
        totals = found.setdefault(profile.label("site"), [WindowTotals(0, 0)] * len(WINDOWS))
        if minutes.first is None or minutes.first >= now:
            continue
        for n, width in enumerate(WINDOWS):
            low = max(now - width, minutes.first)
            totals[n] = WindowTotals(
                totals[n].watched + now - low,
                totals[n].heartbeats + minutes.count_between(low, now),
            )
    return found


def test_totals_follow_heartbeats_moves_and_removals() -> None:
    rng = random.Random(1515)
    index = GroupIndex("site", NOW, max(WINDOWS))
    devices: dict[str, tuple[Profile, MinuteSet]] = {}
    for n in range(30):
        profile, minutes = site(rng.choice(["paris", "lyon", None])), MinuteSet()
        for minute in rng.sample(range(NOW - 9000, NOW + 100), 50):
            minutes.add(minute)  # history from before the index
        devices[f"d{n}"] = (profile, minutes)
        index.add(f"d{n}", profile, minutes)
    assert index.totals(NOW, WINDOWS) == expected(devices, NOW)
    for step in range(600):
        device_id = rng.choice(sorted(devices))
        profile, minutes = devices[device_id]
        action = rng.random()
        if action < 0.8:  # out of order, before the first, far ahead or far behind
            minute = rng.choice(
                [NOW - rng.randrange(10_000), NOW + rng.randrange(50), NOW - 10**6, NOW + 10**6]
            )
            first = minutes.first
            if minutes.add(minute):
                index.heartbeat(device_id, minute, first)
        elif action < 0.9:
            after = site(rng.choice(["paris", "lyon", "nice", None]))
            index.move(device_id, profile, after, minutes)
            devices[device_id] = (after, minutes)
        else:
            index.remove(device_id, minutes)
            del devices[device_id]
            devices[f"new{step}"] = (site("paris"), MinuteSet())
            index.add(f"new{step}", site("paris"), MinuteSet())
        now = NOW + rng.randrange(0, 60)
        assert index.totals(now, WINDOWS) == expected(devices, now)


def test_a_device_added_twice_counts_once() -> None:
    index = GroupIndex("site", NOW, 60)
    minutes = MinuteSet()
    minutes.add(NOW - 1)
    index.add("a", site("x"), minutes)
    index.add("a", site("y"), minutes)
    assert index.totals(NOW, [60]) == {"x": [WindowTotals(1, 1)]}
    index.remove("b", minutes)  # not a member: nothing
    index.heartbeat("b", NOW - 2, None)
    assert index.totals(NOW, [60]) == {"x": [WindowTotals(1, 1)]}


def test_the_span_it_covers() -> None:
    index = GroupIndex("site", NOW, 7200)
    assert (index.base, index.span) == (
        NOW - 7200 - PAST_MARGIN,
        7200 + PAST_MARGIN + FUTURE_MINUTES,
    )
    assert index.covers(NOW) and index.covers(NOW - PAST_MARGIN)
    assert not index.covers(NOW - PAST_MARGIN - 1)  # the clock stepped back a day and more
    assert index.covers(NOW + FUTURE_MINUTES)  # heartbeats up to then were counted
    assert not index.covers(NOW + FUTURE_MINUTES + 1)
    assert index.covers(NOW, 60) and not index.covers(NOW, 7201)  # a longer window: made anew


def test_too_many_values_are_refused() -> None:
    index = GroupIndex("site", NOW, 60)
    for n in range(MAX_GROUPS):
        index.add(f"d{n}", site(f"s{n}"), MinuteSet())
    index.add("more", site("s0"), MinuteSet())  # an existing value is fine
    with pytest.raises(TooManyGroupsError):
        index.add("one-too-many", site("new"), MinuteSet())
    assert len(index.totals(NOW, [60])) == MAX_GROUPS
