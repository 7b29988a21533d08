"""Durable state: the journal's format and damage handling, snapshots, replay, CSV merge."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.errors import IdempotencyConflictError
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.domain.maintenance import parse_window
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.http.app import create_app
from fleet_monitor.store import snapshot as snapshot_module
from fleet_monitor.store.durable import DurableStore, StateError
from fleet_monitor.store.journal import (
    MAGIC,
    CorruptJournalError,
    Entry,
    Journal,
    JournalError,
    encode,
    read_segment,
    segments,
)
from fleet_monitor.store.memory import MemoryStore
from fleet_monitor.store.snapshot import SNAPSHOT_FILE, SnapshotError, read_snapshot
from tests.conftest import DEVICE, SAMPLE_DEVICES, exported
from tests.support.state import BASE, MINUTE_NS, open_memory, write_segment


def state(store: MemoryStore) -> dict[str, object]:
    """Everything a client can see of the store, and the remembered keys."""
    return {
        device_id: (exported(store, device_id), store.snapshot(device_id))
        for device_id in store.ids_after(None, 10**6)
    }


HEARTBEATS = [Entry(n, "h", DEVICE, sent_at_ns=BASE + n * MINUTE_NS) for n in range(1, 6)]


# --- the journal's records -----------------------------------------------------------------


def test_records_round_trip_in_order(tmp_path: Path) -> None:
    entries = [
        Entry(1, "r", "cam-07"),
        Entry(2, "h", "cam-07", sent_at_ns=BASE, key="k-1"),
        Entry(3, "u", "cam-07", sent_at_ns=-(10**18), upload_ns=2**63 - 1),
        Entry(4, "x", "cam-07"),
    ]
    write_segment(tmp_path / "journal-1.log", entries)
    assert list(read_segment(tmp_path / "journal-1.log", last=True, repair=False)) == entries


def test_a_record_is_length_checksum_and_compact_json() -> None:
    record = encode(Entry(7, "h", "d", sent_at_ns=5))
    payload = b'{"l":7,"t":"h","d":"d","s":5}'
    assert record[8:] == payload
    assert int.from_bytes(record[:4], "little") == len(payload)


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_a_torn_last_record_is_cut_off_with_a_warning(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, HEARTBEATS)
    size = path.stat().st_size
    os.truncate(path, size - cut)
    with caplog.at_level(logging.WARNING):
        assert list(read_segment(path, last=True, repair=False)) == HEARTBEATS[:-1]
    assert path.stat().st_size == offsets[-1]  # the torn bytes are gone
    assert f"cut off {size - cut - offsets[-1]} bytes at offset {offsets[-1]}" in caplog.text


def test_a_damaged_last_record_is_cut_off_too(tmp_path: Path) -> None:
    path = tmp_path / "journal-1.log"
    write_segment(path, HEARTBEATS)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # garbage in the last record's payload
    path.write_bytes(bytes(data))
    assert list(read_segment(path, last=True, repair=False)) == HEARTBEATS[:-1]


def test_a_corrupt_middle_record_stops_the_start_naming_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, HEARTBEATS)
    data = bytearray(path.read_bytes())
    data[offsets[2] + 12] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptJournalError) as raised:
        list(read_segment(path, last=True, repair=False))
    assert str(raised.value) == (
        f"{path}: corrupt journal record at offset {offsets[2]} (a checksum mismatch); "
        f"the next valid record is at offset {offsets[3]}: start with --repair to skip the "
        f"{offsets[3] - offsets[2]} damaged bytes"
    )
    kept = [*HEARTBEATS[:2], *HEARTBEATS[3:]]
    assert list(read_segment(path, last=True, repair=True)) == kept
    assert list(read_segment(path, last=True, repair=False)) == kept  # rewritten without it


def test_damage_in_an_older_segment_is_never_taken_for_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "journal-1.log"
    write_segment(path, HEARTBEATS)
    os.truncate(path, path.stat().st_size - 2)
    with pytest.raises(CorruptJournalError, match="an incomplete record"):
        list(read_segment(path, last=False, repair=False))


def test_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal-1.log"
    path.write_bytes(b"hello world")
    with pytest.raises(CorruptJournalError, match="offset 0 \\(does not start with FMJ1\\)"):
        list(read_segment(path, last=True, repair=False))


def test_segments_sort_by_their_first_lsn(tmp_path: Path) -> None:
    for lsn in (10, 9, 100):
        (tmp_path / f"journal-{lsn}.log").write_bytes(MAGIC)
    assert [p.name for p in segments(tmp_path)] == [
        "journal-9.log",
        "journal-10.log",
        "journal-100.log",
    ]


# --- the journal's writes ------------------------------------------------------------------


def test_always_shares_fsyncs_between_concurrent_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    journal = Journal(tmp_path, 1, "always")
    calls = 0

    def writer(n: int) -> None:
        for i in range(200):
            journal.append("h", f"d{n}", sent_at_ns=i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    [path] = segments(tmp_path)
    assert len(list(read_segment(path, last=True, repair=False))) == 1600
    assert 0 < calls <= 1601  # one per group at most; usually far fewer than appends


def test_a_failed_write_raises_and_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, 1, "no")
    journal.append("h", "d", sent_at_ns=1)

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(JournalError, match="No space left on device"):
        journal.append("h", "d", sent_at_ns=2)
    monkeypatch.undo()
    assert journal.next_lsn == 2  # the lsn was not used up
    journal.append("h", "d", sent_at_ns=3)
    journal.close()
    [path] = segments(tmp_path)
    assert [e.sent_at_ns for e in read_segment(path, last=True, repair=False)] == [1, 3]


def test_a_journal_failure_is_a_503_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_memory(tmp_path)
    client: FlaskClient = create_app(Settings(), store).test_client()

    def fail(*args: object, **kwargs: object) -> int:
        raise JournalError("cannot write the journal: No space left on device")

    assert store._journal is not None
    monkeypatch.setattr(store._journal, "append", fail)
    url = f"/api/v1/devices/{DEVICE}/heartbeat"
    response = client.post(url, data=json.dumps({"sent_at": "2024-04-02T09:00:00Z"}))
    assert (response.status_code, response.json) == (
        503,
        {"msg": "the change was not stored: cannot write the journal: No space left on device"},
    )
    assert store.snapshot(DEVICE).last_heartbeat_ns is None
    assert client.put("/api/v1/devices/cam-07").status_code == 503
    assert "cam-07" not in store


# --- replay, snapshots and the CSV -------------------------------------------------------------


def fill(store: MemoryStore) -> None:
    for n in range(10):
        store.record(DEVICE, Heartbeat(BASE + n * 61 * 10**9), f"k{n}")
        store.record(DEVICE, Upload(BASE + n * MINUTE_NS, 10**9 + n), f"u{n}")
    store.register("cam-07")
    store.record("cam-07", Heartbeat(BASE), None)
    store.remove(SAMPLE_DEVICES[1])
    store.register("gone")
    store.remove("gone")


def test_a_crash_loses_nothing_the_journal_holds(tmp_path: Path) -> None:
    before = open_memory(tmp_path)
    fill(before)
    after = open_memory(tmp_path)  # no close(): as after kill -9
    assert state(after) == state(before)
    assert SAMPLE_DEVICES[1] not in after and "gone" not in after
    # keys were replayed, with their kind and what they recorded
    assert after.record(DEVICE, Heartbeat(BASE + 3 * 61 * 10**9), "k3") is False
    assert after.record(DEVICE, Upload(BASE + 3 * MINUTE_NS, 10**9 + 3), "u3") is False
    with pytest.raises(IdempotencyConflictError):
        after.record(DEVICE, Heartbeat(BASE), "k3")
    assert after.record(DEVICE, Upload(BASE, 1), "k3") is True  # another kind's key


def test_close_snapshots_and_the_next_start_replays_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "everysec", 0)
    durable.open(store, SAMPLE_DEVICES)
    fill(store)
    durable.close()
    kept, current = segments(tmp_path)  # the journal a fall back to no snapshot needs
    assert kept.stat().st_size > len(MAGIC) and current.stat().st_size == len(MAGIC)
    with caplog.at_level(logging.INFO):
        again = open_memory(tmp_path)
    assert "0 journal records replayed" in caplog.text
    assert state(again) == state(store)


def test_a_snapshot_taken_during_writes_counts_each_change_once(tmp_path: Path) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    stop = threading.Event()

    def writer(device_id: str) -> None:
        n = 0
        while not stop.is_set():
            store.record(device_id, Upload(BASE + n * MINUTE_NS, n), None)
            store.record(device_id, Heartbeat(BASE + n * MINUTE_NS), None)
            n += 1

    threads = [threading.Thread(target=writer, args=(d,)) for d in SAMPLE_DEVICES]
    for thread in threads:
        thread.start()
    for _ in range(3):
        durable.snapshot()
    stop.set()
    for thread in threads:
        thread.join()
    assert state(open_memory(tmp_path)) == state(store)


def test_the_csv_adds_and_runtime_registry_changes_stay(tmp_path: Path) -> None:
    store = open_memory(tmp_path, SAMPLE_DEVICES[:3])
    store.register("cam-07")
    store.remove(SAMPLE_DEVICES[0])
    durable = DurableStore(tmp_path, "no", 0)
    later = MemoryStore()
    durable.open(later, (*SAMPLE_DEVICES, "new-1"))  # the CSV grew
    expected = sorted({*SAMPLE_DEVICES[1:], "new-1", "cam-07"})
    assert later.ids_after(None, 100) == expected
    durable.close()
    assert open_memory(tmp_path, SAMPLE_DEVICES).ids_after(None, 100) == expected
    again = open_memory(tmp_path, SAMPLE_DEVICES)
    again.register(SAMPLE_DEVICES[0])  # registered again: no longer removed
    assert SAMPLE_DEVICES[0] in open_memory(tmp_path, SAMPLE_DEVICES)


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StateError, match=f"{blocker}: cannot use the data directory"):
        open_memory(blocker)


def test_a_snapshot_of_another_version_or_cut_short_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    durable.close()
    path = tmp_path / SNAPSHOT_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(SnapshotError, match="incomplete"):
        read_snapshot(tmp_path)
    header = json.loads(lines[0])
    path.write_text(json.dumps({**header, "version": 2}) + "\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(SnapshotError, match="snapshot version 2 is not 1"):
        read_snapshot(tmp_path)


def _two_snapshots(directory: Path) -> MemoryStore:
    """A store snapshotted twice (the second holds ``fill``'s later half); return it."""
    store = MemoryStore()
    durable = DurableStore(directory, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    store.record(DEVICE, Heartbeat(BASE - 100 * MINUTE_NS), None)
    durable.snapshot()
    fill(store)
    durable.close()
    return store


def _damage_a_device_line(path: Path) -> None:
    """Change one minute's count in the snapshot: valid JSON, wrong checksum."""
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"count":', '"count":1', 1)
    path.write_text("".join(lines))


def test_a_damaged_snapshot_is_refused_in_one_line_unless_repair_uses_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _two_snapshots(tmp_path)
    snapshot = tmp_path / SNAPSHOT_FILE
    _damage_a_device_line(snapshot)
    with pytest.raises(SnapshotError) as refused:
        open_memory(tmp_path)
    assert str(refused.value) == (
        f"{snapshot}: the snapshot is damaged (its checksum does not match) (start with "
        "--repair to fall back)"
    )
    damaged = snapshot.read_bytes()
    with caplog.at_level(logging.WARNING):
        assert state(open_memory(tmp_path, repair=True)) == state(store)
    assert "starting from snapshot.prev.jsonl and the journal" in caplog.text
    assert (tmp_path / (SNAPSHOT_FILE + ".damaged")).read_bytes() == damaged
    assert state(open_memory(tmp_path)) == state(store)  # as after a crash: no --repair


def test_a_damaged_first_snapshot_falls_back_to_the_whole_journal(tmp_path: Path) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    fill(store)
    durable.close()
    _damage_a_device_line(tmp_path / SNAPSHOT_FILE)
    assert state(open_memory(tmp_path, repair=True)) == state(store)


def test_with_no_previous_snapshot_nor_the_first_change_repair_refuses(tmp_path: Path) -> None:
    _two_snapshots(tmp_path)
    (tmp_path / "snapshot.prev.jsonl").unlink()
    _damage_a_device_line(tmp_path / SNAPSHOT_FILE)
    with pytest.raises(SnapshotError, match="there is no previous snapshot and the journal"):
        open_memory(tmp_path, repair=True)
    assert (tmp_path / SNAPSHOT_FILE).exists()  # nothing moved


def test_a_snapshot_drops_only_the_journal_the_previous_snapshot_holds(tmp_path: Path) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    firsts = []
    for minute in range(4):
        store.record(DEVICE, Heartbeat(BASE + minute * MINUTE_NS), None)
        durable.snapshot()
        firsts.append([int(p.name[8:-4]) for p in segments(tmp_path)])
    durable.close()
    # each snapshot keeps the segments from the one before it (from lsn 1 for the first)
    assert firsts == [[1, 2], [2, 3], [3, 4], [4, 5]]
    assert read_snapshot(tmp_path, "snapshot.prev.jsonl") is not None


def test_a_journal_that_starts_after_the_snapshot_is_refused(tmp_path: Path) -> None:
    _two_snapshots(tmp_path)
    first = segments(tmp_path)[0]
    for path in segments(tmp_path)[:-1]:
        path.unlink()
    (tmp_path / SNAPSHOT_FILE).unlink()
    os.rename(tmp_path / "snapshot.prev.jsonl", tmp_path / SNAPSHOT_FILE)
    with pytest.raises(StateError, match="changes are missing"):
        open_memory(tmp_path)
    assert first.name.startswith("journal-")


@pytest.mark.parametrize(
    ("header", "device", "message"),
    [
        ({"next_lsn": None}, None, "not a fleet-monitor snapshot"),
        ({}, {"id": "x"}, "snapshot line 2: not a device (KeyError('first'))"),
        ({}, "[1, 2]", "snapshot line 2: not a device"),
        ({"removed": 5}, None, "not a fleet-monitor snapshot"),
    ],
)
def test_a_wrong_snapshot_without_a_checksum_is_a_one_line_error(
    tmp_path: Path, header: dict[str, Any], device: Any, message: str
) -> None:
    """Snapshots written before the checksum are read unchecked; their damage still reads as
    one line (the CLI prints it, exit 2), never a traceback."""
    lines = [
        {"format": "fleet-monitor-snapshot", "version": 1, "next_lsn": 1, "registry_lsn": 0}
        | {"removed": []}
        | header
    ]
    if device is not None:
        lines.append(json.loads(device) if isinstance(device, str) else device)
    lines.append({"end": True, "devices": len(lines) - 1})
    (tmp_path / SNAPSHOT_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(SnapshotError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_memory(tmp_path)


def test_a_failed_last_snapshot_keeps_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    fill(store)

    def full_disk(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fleet_monitor.store.durable.write_snapshot", full_disk)
    durable.close()
    monkeypatch.undo()
    assert "the last snapshot failed" in caplog.text
    assert state(open_memory(tmp_path)) == state(store)


def test_a_snapshot_writes_each_device_with_no_device_lock_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    held: list[bool] = []

    class Watching:
        """json as snapshot.py uses it, noting whether each device's lock is held."""

        @staticmethod
        def dumps(value: dict[str, object], **kwargs: Any) -> str:
            if "lsn" in value:
                held.append(store.device(str(value["id"])).lock.locked())
            return json.dumps(value, **kwargs)

    monkeypatch.setattr(snapshot_module, "json", Watching)
    durable.snapshot()
    assert held == [False] * len(SAMPLE_DEVICES)
    durable.close()


def test_a_device_removed_and_registered_during_a_snapshot_starts_empty_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its old heartbeat, journaled before the snapshot's rotation, is replayed after the
    snapshot that holds the new device: the new device's lsn (its registration's) skips it."""
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    assert durable._journal is not None
    rotate = durable._journal.rotate

    def rotate_then_race() -> list[Path]:
        older = rotate()
        store.record(DEVICE, Heartbeat(BASE), None)  # in the new segment
        store.remove(DEVICE)
        store.register(DEVICE)
        return older

    monkeypatch.setattr(durable._journal, "rotate", rotate_then_race)
    durable.snapshot()
    assert store.snapshot(DEVICE).heartbeat_minutes == 0
    assert open_memory(tmp_path).snapshot(DEVICE).heartbeat_minutes == 0  # as after kill -9


def test_a_heartbeats_receipt_survives_a_restart_from_the_journal_and_the_snapshot(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    store.record(DEVICE, Heartbeat(BASE, received_ns=BASE + 7), None)
    store.record(DEVICE, Heartbeat(BASE - MINUTE_NS, received_ns=BASE + 9), None)  # late
    replayed = open_memory(tmp_path).snapshot(DEVICE)  # no close(): as after kill -9
    assert (replayed.last_received_ns, replayed.last_received_sent_ns) == (
        BASE + 9,
        BASE - MINUTE_NS,
    )
    durable.close()  # a snapshot
    restored = open_memory(tmp_path).snapshot(DEVICE)
    assert (restored.last_received_ns, restored.last_received_sent_ns) == (
        BASE + 9,
        BASE - MINUTE_NS,
    )
    assert restored.clock_skew_ns == -MINUTE_NS - 9


def test_a_profile_survives_a_restart_from_the_journal_and_the_snapshot(tmp_path: Path) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    profile, other = Profile((("site", "paris"),), 300, None), SAMPLE_DEVICES[1]
    store.set_profile(DEVICE, profile)
    store.set_profile(other, profile)
    store.remove(DEVICE)
    store.register(DEVICE)  # starts again, without a profile
    replayed = open_memory(tmp_path)  # no close(): as after kill -9
    assert (replayed.snapshot(DEVICE).profile, replayed.snapshot(other).profile) == (
        Profile(),
        profile,
    )
    durable.close()  # a snapshot
    restored = open_memory(tmp_path)
    assert (restored.snapshot(DEVICE).profile, restored.snapshot(other).profile) == (
        Profile(),
        profile,
    )


def test_maintenance_windows_survive_a_restart_from_the_journal_and_the_snapshot(
    tmp_path: Path,
) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    body = {"devices": [DEVICE], "cron": "0 2 * * 0", "duration": 3600, "reason": "patch"}
    kept, dropped = parse_window(body, BASE), parse_window(body, BASE + 1)
    store.add_maintenance(kept)
    store.add_maintenance(dropped)
    assert store.remove_maintenance(dropped.id) is True
    assert store.remove_maintenance(dropped.id) is False
    assert open_memory(tmp_path).maintenance() == [kept]  # replayed
    durable.close()  # a snapshot
    assert open_memory(tmp_path).maintenance() == [kept]
