"""The memory store's group indexes: ``group_by`` from the index answers what counting device
by device answers, through every change a device goes through, across threads, and when the
clock leaves the index's span."""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from typing import Any

import pytest

from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.domain.group_index import FUTURE_MINUTES, MAX_GROUPS
from fleet_monitor.domain.groups import GroupSummary, group_summaries
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.readmodels import Expectations
from fleet_monitor.domain.timestamps import MINUTE_NS
from fleet_monitor.store.group_indexes import MAX_KEYS
from fleet_monitor.store.memory import MemoryStore

NOW = 28_500_000  # minutes
EXPECT = Expectations()


class Uncounted:
    """A store without group indexes: group_by counts device by device."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def group_totals(self, *_: object) -> None:
        return None


def grouped(store: MemoryStore, now: int, key: str = "site") -> list[GroupSummary]:
    return group_summaries(store, now * MINUTE_NS + 30 * 10**9, EXPECT, key)


def counted(store: MemoryStore, now: int, key: str = "site") -> list[GroupSummary]:
    return group_summaries(Uncounted(store), now * MINUTE_NS + 30 * 10**9, EXPECT, key)


def site(value: str | None) -> Profile:
    return Profile(() if value is None else (("site", value),))


def beat(store: MemoryStore, device: str, minute: int) -> None:
    store.record(device, Heartbeat(minute * MINUTE_NS, minute * MINUTE_NS), None)


def test_the_index_follows_every_change_of_a_device() -> None:
    rng = random.Random(7)
    store = MemoryStore([f"d{n}" for n in range(40)])
    for n in range(40):
        store.set_profile(f"d{n}", site(rng.choice(["paris", "lyon", None])))
        for minute in rng.sample(range(NOW - 50_000, NOW), 30):
            beat(store, f"d{n}", minute)
    assert grouped(store, NOW) == counted(store, NOW)  # the index is made
    added = 0
    for step in range(500):
        devices = list(store)
        device = rng.choice(devices)
        action = rng.random()
        if action < 0.75:  # late, early, out of order, before the first, far ahead
            choices = [NOW - rng.randrange(60_000), NOW + rng.randrange(100), NOW + 10**6]
            beat(store, device, rng.choice(choices))
        elif action < 0.85:
            store.set_profile(device, site(rng.choice(["paris", "lyon", "nice", None])))
        elif action < 0.9:
            store.remove(device)
        elif action < 0.95:
            store.register(f"new{added}")
            added += 1
        else:  # removed, then back with no history
            store.remove(device)
            store.register(device)
        if step % 25 == 0:
            assert grouped(store, NOW + step // 25) == counted(store, NOW + step // 25)
    assert grouped(store, NOW + 20) == counted(store, NOW + 20)


def test_devices_file_profiles_move_devices_between_groups() -> None:
    store = MemoryStore(["a", "b"])
    beat(store, "a", NOW - 5)
    assert [g.value for g in grouped(store, NOW)] == [None]
    store.apply_file_profiles({"a": Profile((("site", "x"),), from_file=True)})
    assert [(g.value, g.with_heartbeat["24h"]) for g in grouped(store, NOW)] == [
        ("x", 1),
        (None, 0),
    ]
    assert grouped(store, NOW) == counted(store, NOW)


def test_the_index_is_made_anew_when_the_clock_leaves_its_span() -> None:
    store = MemoryStore(["a", "b"])
    store.set_profile("a", site("x"))
    beat(store, "a", NOW - 10)
    grouped(store, NOW)
    later = NOW + FUTURE_MINUTES + 100
    beat(store, "a", later - 5)  # past the span: not counted by the index it reached
    beat(store, "b", NOW - 2 * 1440)  # a day before: still in it
    for now in (later, NOW - 5 * 1440, NOW):  # ahead, then back more than a day, then back
        assert grouped(store, now) == counted(store, now)
    assert [(g.value, g.with_heartbeat["30d"]) for g in grouped(store, later)] == [
        ("x", 2),
        (None, 1),
    ]


def test_a_key_with_too_many_values_is_counted_device_by_device() -> None:
    ids = [f"d{n}" for n in range(MAX_GROUPS + 1)]
    store = MemoryStore(ids)
    for n, device in enumerate(ids):
        store.set_profile(device, site(f"s{n}"))
        beat(store, device, NOW - 1 - n)
    assert store.group_totals("site", NOW, [1440]) is None
    assert grouped(store, NOW) == counted(store, NOW)
    assert len(grouped(store, NOW)) == MAX_GROUPS + 1
    store.set_profile("d0", site("s1"))  # one value fewer: indexed again
    totals = store.group_totals("site", NOW, [1440])
    assert totals is not None and len(totals) == MAX_GROUPS
    assert grouped(store, NOW) == counted(store, NOW)


def test_the_least_recently_read_keys_are_dropped() -> None:
    store = MemoryStore(["a"])
    store.set_profile("a", Profile(tuple((f"k{n}", "v") for n in range(MAX_KEYS + 2))))
    beat(store, "a", NOW - 1)
    for n in range(MAX_KEYS + 2):
        assert grouped(store, NOW, f"k{n}") == counted(store, NOW, f"k{n}")
    assert store.indexed_keys() == [f"k{n}" for n in range(2, MAX_KEYS + 2)]
    beat(store, "a", NOW - 2)
    assert grouped(store, NOW, "k0") == counted(store, NOW, "k0")  # made again
    assert store.indexed_keys() == [*(f"k{n}" for n in range(3, MAX_KEYS + 2)), "k0"]


def test_writers_racing_the_first_group_by_are_all_counted() -> None:
    """16 threads send heartbeats while the index is made from 20,000 devices: every one is
    counted exactly once, in whichever order the two met."""
    ids = [f"d{n:05d}" for n in range(20_000)]
    store = MemoryStore(ids)
    for n, device in enumerate(ids):
        store.set_profile(device, site(f"s{n % 7}"))
        beat(store, device, NOW - 100)
    start = threading.Barrier(17)

    def send(part: int) -> None:
        start.wait()
        for device in ids[part::16]:
            beat(store, device, NOW - 50)
            beat(store, device, NOW - 3 * 1440)  # a new first minute too

    threads = [threading.Thread(target=send, args=(part,)) for part in range(16)]
    for thread in threads:
        thread.start()
    start.wait()
    grouped(store, NOW)
    for thread in threads:
        thread.join()
    assert grouped(store, NOW) == counted(store, NOW)
    assert sum(g.with_heartbeat["30d"] for g in grouped(store, NOW)) == 60_000


def test_registrations_racing_heartbeats_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    """A device registered while heartbeats for it are on their way (threads switching as
    often as they can): each one reaches the index (it is counted before a write can find
    it), no index fails, and every device can leave again."""
    switch = sys.getswitchinterval()
    store = MemoryStore(["seed"])
    grouped(store, NOW)  # an index follows the changes
    current = ["x0"]
    stop = threading.Event()

    def send() -> None:
        minute = 0
        while not stop.is_set():
            minute += 1
            with contextlib.suppress(UnknownDeviceError):
                beat(store, current[0], NOW - 1 - minute % 1000)

    senders = [threading.Thread(target=send) for _ in range(3)]
    sys.setswitchinterval(1e-6)
    try:
        for sender in senders:
            sender.start()
        for n in range(1, 1500):
            current[0] = f"x{n}"
            store.register(f"x{n}")
    finally:
        stop.set()
        for sender in senders:
            sender.join()
        sys.setswitchinterval(switch)
    assert grouped(store, NOW) == counted(store, NOW)
    for device in list(store):
        store.remove(device)
    assert grouped(store, NOW) == counted(store, NOW) == []
    assert "group index" not in caplog.text


def test_a_removed_device_is_not_indexed_and_replays_drop_the_indexes() -> None:
    store = MemoryStore(["a", "b"])
    beat(store, "a", NOW - 3)
    grouped(store, NOW)
    assert store.indexed_keys() == ["site"]
    store.replay(10**6, "b", Heartbeat((NOW - 2) * MINUTE_NS), None)
    assert store.indexed_keys() == []  # replayed outside the index: made anew
    assert grouped(store, NOW) == counted(store, NOW)
    store.restore("c", 0, store.device("a").history)
    assert store.indexed_keys() == []
    assert grouped(store, NOW) == counted(store, NOW)
