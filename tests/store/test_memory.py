"""The memory store: uptime and averages through it, unknown devices, threads, stand-ins."""

from __future__ import annotations

import threading

import pytest

from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.store.memory import MemoryStore

MINUTE_NS = 60 * 1_000_000_000
BASE = 28_534_140 * MINUTE_NS  # 2024-04-02T09:00:00Z


def heartbeats(store: MemoryStore, device: str, minutes: list[int], second: int = 0) -> None:
    for minute in minutes:
        store.record(device, Heartbeat(BASE + minute * MINUTE_NS + second * 1_000_000_000), None)


def test_new_device_reports_zero() -> None:
    snapshot = MemoryStore(["a"]).snapshot("a")
    assert (snapshot.uptime, snapshot.avg_upload_ns) == (0.0, 0)


def test_one_heartbeat_is_full_uptime() -> None:
    store = MemoryStore(["a"])
    heartbeats(store, "a", [0])
    assert store.snapshot("a").uptime == 100.0


def test_reference_span_with_missing_minutes() -> None:
    store = MemoryStore(["a"])
    present = [m for m in range(481) if m not in {3, 77}]
    heartbeats(store, "a", present)
    assert store.snapshot("a").uptime == 99.79166666666667


def test_duplicates_and_same_minute_add_nothing() -> None:
    store = MemoryStore(["a"])
    assert store.record("a", Heartbeat(BASE), None) is True
    assert store.record("a", Heartbeat(BASE), None) is False
    assert store.record("a", Heartbeat(BASE + 59 * 1_000_000_000), None) is False
    assert store.record("a", Heartbeat(BASE + MINUTE_NS), None) is True
    assert store.snapshot("a").heartbeat_minutes == 2


def test_out_of_order_equals_in_order() -> None:
    ordered, shuffled = MemoryStore(["a"]), MemoryStore(["a"])
    minutes = [m for m in range(0, 481) if m % 13]
    heartbeats(ordered, "a", minutes)
    heartbeats(shuffled, "a", minutes[::-1][::2] + minutes[::-1][1::2])
    assert ordered.snapshot("a") == shuffled.snapshot("a")


def test_average_upload_truncates_integer_nanoseconds() -> None:
    store = MemoryStore(["a"])
    for upload in (1, 2, 2):
        store.record("a", Upload(0, upload), None)
    assert store.snapshot("a").avg_upload_ns == 1  # 5 // 3


def test_upload_sum_does_not_overflow() -> None:
    store = MemoryStore(["a"])
    for _ in range(10):
        store.record("a", Upload(0, 2**63 - 1), None)
    assert store.snapshot("a").avg_upload_ns == 2**63 - 1


def test_unknown_device() -> None:
    store = MemoryStore(["a"])
    with pytest.raises(UnknownDeviceError):
        store.snapshot("b")
    with pytest.raises(UnknownDeviceError):
        store.record("b", Heartbeat(BASE), None)
    with pytest.raises(UnknownDeviceError):
        store.record("b", Upload(0, 1), None)
    assert "b" not in store


def test_fleet_keeps_each_id_once_in_order() -> None:
    store = MemoryStore(["b", "a", "b"])
    assert len(store) == 2
    assert list(store) == ["b", "a"]


def test_concurrent_writers_lose_nothing() -> None:
    store = MemoryStore(["a", "b"])
    threads_count, per_thread = 16, 2_000
    barrier = threading.Barrier(threads_count)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            device = "a" if i % 2 else "b"
            # Threads overlap on half of their minutes, so duplicates race too.
            store.record(device, Heartbeat(BASE + (index * per_thread // 2 + i) * MINUTE_NS), None)
            store.record(device, Upload(BASE, index + 1), None)

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
        snapshot = store.snapshot(device)
        assert snapshot.heartbeat_minutes == len(expected_minutes[device])
        assert snapshot.upload_count == threads_count * per_thread // 2
        assert snapshot.upload_sum_ns == sum(range(1, threads_count + 1)) * per_thread // 2


def test_records_share_empty_stand_ins_until_their_first_event() -> None:
    store = MemoryStore(["a", "b"])
    a, b = store.device("a").history, store.device("b").history
    assert a.minutes is b.minutes and a.uploads is b.uploads  # nothing allocated per device
    store.record("a", Heartbeat(60 * 10**9), None)
    store.record("b", Upload(60 * 10**9, 5), None)
    assert a.minutes is not b.minutes and a.uploads is not b.uploads
    assert (len(a.minutes), len(b.minutes)) == (1, 0)
    assert store.upload_aggregates("b", [(0, 10)])[0].count == 1
    assert store.upload_aggregates("a", [(0, 10)])[0].count == 0
    assert MemoryStore(["c"]).snapshot("c").heartbeat_minutes == 0  # the shared one stayed empty


def test_add_all_adds_only_new_ids_and_keeps_them_sorted() -> None:
    store = MemoryStore(["m", "c"])
    store.record("c", Heartbeat(60 * 10**9), None)
    assert store.add_all(["z", "c", "a", "z"]) == 2
    assert store.ids_after(None, 10) == ["a", "c", "m", "z"]
    assert store.snapshot("c").uptime == 100.0  # an existing record is kept, history and all


def test_uploads_in_one_minute_keep_every_value() -> None:
    store = MemoryStore(["a"])
    for upload_ns in (7, 3, 2**63 - 1, 2**63 - 1):
        store.record("a", Upload(60 * 10**9, upload_ns), None)
    [total] = store.upload_aggregates("a", [(1, 2)])
    assert (total.count, total.sum_ns, total.min_ns, total.max_ns) == (4, 2**64 + 8, 3, 2**63 - 1)


def test_snapshots_are_handed_out_with_no_device_lock_held() -> None:
    store = MemoryStore(["a", "b"])
    for snapshot in store.snapshots():
        assert not store.device(snapshot.device_id).lock.locked()
