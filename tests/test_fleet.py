"""The fleet domain: uptime formula, upload averages, unknown devices, threads."""

from __future__ import annotations

import threading

import pytest

from fleet_monitor.errors import UnknownDeviceError
from fleet_monitor.fleet import (
    DeviceStats,
    Fleet,
    is_valid_device_id,
    uptime_percent,
)

MINUTE_NS = 60 * 1_000_000_000
BASE = 28_534_140 * MINUTE_NS  # 2024-04-02T09:00:00Z


@pytest.mark.parametrize(
    ("minutes_seen", "first", "last", "uptime"),
    [
        (0, None, None, 0.0),
        (1, 5, 5, 100.0),
        (446, 0, 480, 92.91666666666667),
        (479, 0, 480, 99.79166666666667),
        (480, 0, 480, 100.0),
        (481, 0, 480, 100.0),
        (474, 0, 480, 98.75),
        (2, 0, 480, 0.4166666666666667),
        (2, 0, 1, 100.0),
    ],
)
def test_uptime_formula(
    minutes_seen: int, first: int | None, last: int | None, uptime: float
) -> None:
    assert uptime_percent(minutes_seen, first, last) == uptime


def heartbeats(fleet: Fleet, device: str, minutes: list[int], second: int = 0) -> None:
    for minute in minutes:
        fleet.record_heartbeat(device, BASE + minute * MINUTE_NS + second * 1_000_000_000)


def test_new_device_reports_zero() -> None:
    assert Fleet(["a"]).stats("a") == DeviceStats(uptime=0.0, avg_upload_ns=0)


def test_one_heartbeat_is_full_uptime() -> None:
    fleet = Fleet(["a"])
    heartbeats(fleet, "a", [0])
    assert fleet.stats("a").uptime == 100.0


def test_reference_span_with_missing_minutes() -> None:
    fleet = Fleet(["a"])
    present = [m for m in range(481) if m not in {3, 77}]
    heartbeats(fleet, "a", present)
    assert fleet.stats("a").uptime == 99.79166666666667


def test_duplicates_and_same_minute_add_nothing() -> None:
    fleet = Fleet(["a"])
    assert fleet.record_heartbeat("a", BASE) is True
    assert fleet.record_heartbeat("a", BASE) is False
    assert fleet.record_heartbeat("a", BASE + 59 * 1_000_000_000) is False
    assert fleet.record_heartbeat("a", BASE + MINUTE_NS) is True
    assert len(fleet.device("a").minutes) == 2


def test_out_of_order_equals_in_order() -> None:
    ordered, shuffled = Fleet(["a"]), Fleet(["a"])
    minutes = [m for m in range(0, 481) if m % 13]
    heartbeats(ordered, "a", minutes)
    heartbeats(shuffled, "a", minutes[::-1][::2] + minutes[::-1][1::2])
    assert ordered.stats("a") == shuffled.stats("a")


def test_average_upload_truncates_integer_nanoseconds() -> None:
    fleet = Fleet(["a"])
    for upload in (1, 2, 2):
        fleet.record_upload("a", 0, upload)
    assert fleet.stats("a").avg_upload_ns == 1  # 5 // 3


def test_upload_sum_does_not_overflow() -> None:
    fleet = Fleet(["a"])
    for _ in range(10):
        fleet.record_upload("a", 0, 2**63 - 1)
    assert fleet.stats("a").avg_upload_ns == 2**63 - 1


def test_unknown_device() -> None:
    fleet = Fleet(["a"])
    with pytest.raises(UnknownDeviceError):
        fleet.stats("b")
    with pytest.raises(UnknownDeviceError):
        fleet.record_heartbeat("b", BASE)
    with pytest.raises(UnknownDeviceError):
        fleet.record_upload("b", 0, 1)
    assert "b" not in fleet


def test_fleet_keeps_each_id_once_in_order() -> None:
    fleet = Fleet(["b", "a", "b"])
    assert len(fleet) == 2
    assert list(fleet) == ["b", "a"]


@pytest.mark.parametrize(
    ("device_id", "valid"),
    [
        ("60-6b-44-84-dc-64", True),
        ("cam_01.site:3", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("ü", False),
    ],
)
def test_device_id_rule(device_id: str, valid: bool) -> None:
    assert is_valid_device_id(device_id) is valid


def test_concurrent_writers_lose_nothing() -> None:
    fleet = Fleet(["a", "b"])
    threads_count, per_thread = 16, 2_000
    barrier = threading.Barrier(threads_count)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            device = "a" if i % 2 else "b"
            # Threads overlap on half of their minutes, so duplicates race too.
            fleet.record_heartbeat(device, BASE + (index * per_thread // 2 + i) * MINUTE_NS)
            fleet.record_upload(device, BASE, index + 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected_minutes = {
        device: {
            index * per_thread // 2 + i
            for index in range(threads_count)
            for i in range(per_thread)
            if (i % 2 == 1) == (device == "a")
        }
        for device in ("a", "b")
    }
    for device in ("a", "b"):
        record = fleet.device(device)
        assert len(record.minutes) == len(expected_minutes[device])
        assert record.upload_count == threads_count * per_thread // 2
        assert record.upload_sum_ns == sum(range(1, threads_count + 1)) * per_thread // 2


def test_records_share_empty_stand_ins_until_their_first_event() -> None:
    fleet = Fleet(["a", "b"])
    a, b = fleet.device("a"), fleet.device("b")
    assert a.minutes is b.minutes and a.uploads is b.uploads  # nothing allocated per device
    a.add_heartbeat(60 * 10**9)
    b.add_upload(60 * 10**9, 5)
    assert a.minutes is not b.minutes and a.uploads is not b.uploads
    assert (len(a.minutes), len(b.minutes)) == (1, 0)
    assert b.uploads_between(0, 10).count == 1
    assert a.uploads_between(0, 10).count == 0
    assert len(Fleet(["c"]).device("c").minutes) == 0  # the shared empty one stayed empty


def test_add_all_adds_only_new_ids_and_keeps_them_sorted() -> None:
    fleet = Fleet(["m", "c"])
    fleet.device("c").add_heartbeat(60 * 10**9)
    assert fleet.add_all(["z", "c", "a", "z"]) == 2
    assert fleet.ids_after(None, 10) == ["a", "c", "m", "z"]
    assert fleet.stats("c").uptime == 100.0  # an existing record is kept, history and all


def test_uploads_in_one_minute_keep_every_value() -> None:
    record = Fleet(["a"]).device("a")
    for upload_ns in (7, 3, 2**63 - 1, 2**63 - 1):
        record.add_upload(60 * 10**9, upload_ns)
    total = record.uploads_between(1, 2)
    assert (total.count, total.sum_ns, total.min_ns, total.max_ns) == (4, 2**64 + 8, 3, 2**63 - 1)
