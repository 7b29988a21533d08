"""The journal on a frozen disk: no fsync under its lock, durability tracked by lsn across
rotations, and a snapshot that never holds a write up for longer than its own copy."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.http.app import create_app
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import Journal, JournalError, read_segment, segments
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import SAMPLE_DEVICES

DEADLINE_S = 10.0  # liveness only: each step takes milliseconds unless the journal hangs


class FrozenDisk:
    """``os.fsync`` replaced: each call is noted by file name once done; while frozen, calls
    (on files whose name contains ``only``, if given) wait until thawed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.directory = directory
        self.events: list[str] = []
        self.held = threading.Event()  # an fsync is waiting at the gate
        self._open = threading.Event()
        self._open.set()
        self._only = ""
        self._lock = threading.Lock()
        real = os.fsync

        def fsync(fd: int) -> None:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
            name = "directory" if target == directory else target.name
            if not self._open.is_set() and self._only in name:
                self.held.set()
                self._open.wait()
            real(fd)
            self.note(f"fsync {name}")

        monkeypatch.setattr(os, "fsync", fsync)

    def freeze(self, only: str = "") -> None:
        """Hold every later fsync (of files named with ``only``) until :meth:`thaw`."""
        self._only = only
        self.held.clear()
        self._open.clear()

    def thaw(self) -> None:
        """Let held and later fsyncs run."""
        self._open.set()

    def note(self, event: str) -> None:
        """Add an event to the ordered list."""
        with self._lock:
            self.events.append(event)


def in_thread(work: Callable[[], object]) -> threading.Thread:
    """Start ``work`` in a daemon thread (so a hang fails the test instead of freezing it)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def within_deadline(work: Callable[[], object]) -> None:
    """Run ``work``; fail if it does not return in time (the journal would be frozen)."""
    thread = in_thread(work)
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "blocked behind a frozen fsync"


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def appender(journal: Journal, disk: FrozenDisk, name: str) -> threading.Thread:
    """Append a record for device ``name`` in a thread; note ``returned <name>`` after."""

    def work() -> None:
        journal.append("h", name, sent_at_ns=1)
        disk.note(f"returned {name}")

    return in_thread(work)


def after(events: list[str], first: str, then: str) -> bool:
    """Whether ``then`` occurs after some ``first``."""
    return first in events and then in events[events.index(first) + 1 :]


def test_rotation_while_an_fsync_is_in_flight_waits_for_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FrozenDisk(monkeypatch, tmp_path)
    journal = Journal(tmp_path, 1, "always")
    journal.append("h", "warm-up", sent_at_ns=0)
    disk.freeze()
    a = appender(journal, disk, "a")  # lsn 2, in journal-1.log; its fsync hangs
    assert disk.held.wait(DEADLINE_S)
    older: list[Path] = []
    within_deadline(lambda: older.extend(journal.rotate()))
    assert older == [tmp_path / "journal-1.log"]
    b = appender(journal, disk, "b")  # lsn 3, in journal-3.log
    wait_for(lambda: journal.next_lsn == 4)  # written to the OS with the fsync still frozen
    assert a.is_alive() and b.is_alive()  # neither is reported durable yet
    disk.note("thawed")
    disk.thaw()
    a.join(DEADLINE_S)
    b.join(DEADLINE_S)
    journal.close()
    events = disk.events[disk.events.index("thawed") :]
    # b's record is durable only once its new segment and the directory entry are
    assert after(events, "fsync directory", "returned b")
    assert after(events, "fsync journal-3.log", "returned b")
    assert journal.durable_lsn == 3


def test_an_always_writer_whose_record_was_in_the_old_segment_waits_for_its_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FrozenDisk(monkeypatch, tmp_path)
    journal = Journal(tmp_path, 1, "always")
    journal.append("h", "warm-up", sent_at_ns=0)
    disk.freeze()
    x = appender(journal, disk, "x")  # lsn 2: its fsync (of journal-1.log) hangs
    assert disk.held.wait(DEADLINE_S)
    a = appender(journal, disk, "a")  # lsn 3 written after x's fsync began
    wait_for(lambda: journal.next_lsn == 4)
    within_deadline(journal.rotate)
    disk.note("rotated")
    disk.thaw()
    x.join(DEADLINE_S)
    a.join(DEADLINE_S)
    assert not a.is_alive()
    journal.close()
    events = disk.events[disk.events.index("rotated") :]
    # x's fsync began before a's write: a waits for the retired segment's own fsync
    assert events[: events.index("returned a")].count("fsync journal-1.log") >= 2


def test_everysec_writes_and_rotations_go_on_while_the_background_fsync_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FrozenDisk(monkeypatch, tmp_path)
    journal = Journal(tmp_path, 1, "everysec")
    journal.append("h", "d", sent_at_ns=0)
    disk.freeze()
    assert disk.held.wait(DEADLINE_S)  # the background thread's fsync hangs

    def write_and_rotate() -> None:
        for n in range(1, 301):
            journal.append("h", "d", sent_at_ns=n)
            if n % 100 == 0:
                journal.rotate()

    within_deadline(write_and_rotate)
    disk.thaw()
    within_deadline(journal.close)
    found = [
        entry.sent_at_ns
        for path in segments(tmp_path)
        for entry in read_segment(path, last=False, repair=False)
    ]
    assert found == list(range(301))
    assert journal.durable_lsn == 301
    assert open_files(tmp_path) == []  # the retired segments were closed too


def open_files(directory: Path) -> list[Path]:
    """The files in ``directory`` this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, closed meanwhile
        if target.parent == directory:
            found.append(target)
    return found


def test_a_snapshot_stuck_in_its_fsync_holds_no_write_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FrozenDisk(monkeypatch, tmp_path)
    store = MemoryStore()
    durable = DurableStore(tmp_path, "always", 0)
    durable.open(store, SAMPLE_DEVICES)
    disk.freeze(only="snapshot")
    snapshot = in_thread(durable.snapshot)
    assert disk.held.wait(DEADLINE_S)  # the snapshot's own fsync hangs

    def writes() -> None:
        for n, device in enumerate(SAMPLE_DEVICES * 20):
            store.record(device, Heartbeat(n * 60 * 10**9), None)
        store.register("cam-07")

    within_deadline(writes)
    disk.thaw()
    snapshot.join(DEADLINE_S)
    durable.close()


def test_a_failed_rotation_keeps_the_current_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, 1, "no")
    journal.append("h", "d", sent_at_ns=1)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if bytes(data) == b"FMJ1":
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        journal.rotate()
    monkeypatch.undo()
    journal.append("h", "d", sent_at_ns=2)
    journal.close()
    [path] = segments(tmp_path)  # no half-made segment left
    assert [e.sent_at_ns for e in read_segment(path, last=True, repair=False)] == [1, 2]


def test_a_closed_journal_refuses_writes_and_rotations(tmp_path: Path) -> None:
    journal = Journal(tmp_path, 1, "everysec")
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal.append("h", "d", sent_at_ns=1)
    with pytest.raises(JournalError, match="closed"):
        journal.rotate()
    journal.close()  # twice is fine


def test_a_closed_store_takes_no_more_snapshots(tmp_path: Path) -> None:
    durable = DurableStore(tmp_path, "everysec", 0)
    durable.open(MemoryStore(), SAMPLE_DEVICES)
    durable.close()  # as a periodic snapshot due just now would find it
    with pytest.raises(JournalError, match="closed"):
        durable.snapshot()
    durable.close()  # twice is fine


def test_a_failed_fsync_fails_the_always_write_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, 1, "always")
    real_fsync = os.fsync

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(JournalError, match="cannot fsync the journal: Input/output error"):
        journal.append("h", "d", sent_at_ns=1)
    assert journal.health.problem() == f"cannot fsync the journal: Input/output error ({tmp_path})"
    monkeypatch.setattr(os, "fsync", real_fsync)
    wait_for(lambda: journal.health.problem() is None)  # the background thread retried
    assert journal.durable_lsn == 1
    journal.close()


def open_always(tmp_path: Path) -> tuple[MemoryStore, DurableStore]:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "always", 0)
    durable.open(store, SAMPLE_DEVICES)
    return store, durable


def test_an_always_write_waits_for_its_fsync_without_holding_its_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store, durable = open_always(tmp_path)
    disk = FrozenDisk(monkeypatch, tmp_path)
    device = SAMPLE_DEVICES[0]
    disk.freeze(only="journal")
    writer = in_thread(lambda: store.record(device, Heartbeat(60 * 10**9), "k"))
    wait_for(disk.held.is_set)
    assert writer.is_alive()  # not answered: its record is not fsynced yet
    within_deadline(lambda: store.snapshot(device))  # reads of the device go on meanwhile
    assert store.snapshot(device).heartbeat_minutes == 1
    repeat = in_thread(lambda: store.record(device, Heartbeat(60 * 10**9), "k"))
    time.sleep(0.05)
    assert repeat.is_alive()  # a retry's 204 waits for the first one's fsync too
    disk.thaw()
    writer.join(DEADLINE_S)
    repeat.join(DEADLINE_S)
    assert not writer.is_alive() and not repeat.is_alive()
    durable.close()


def test_an_always_batch_waits_for_one_fsync_not_one_per_event(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store, durable = open_always(tmp_path)
    disk = FrozenDisk(monkeypatch, tmp_path)
    for minute in range(20):
        store.record(SAMPLE_DEVICES[minute % 5], Heartbeat(minute * 60 * 10**9), None, wait=False)
    assert [e for e in disk.events if e.startswith("fsync journal")] == []
    store.flush()
    assert len([e for e in disk.events if e.startswith("fsync journal")]) == 1
    durable.close()


def test_an_always_batch_through_the_app_waits_for_one_fsync(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store, durable = open_always(tmp_path)
    disk = FrozenDisk(monkeypatch, tmp_path)
    client = create_app(Settings(), store).test_client()
    events = [
        {
            "device_id": SAMPLE_DEVICES[n % 5],
            "type": "heartbeat",
            "sent_at": f"2024-04-02T09:{n:02d}:00Z",
        }
        for n in range(20)
    ]
    response = client.post("/api/v1/events", data=json.dumps({"events": events}))
    assert response.json == {"accepted": 20, "rejected": []}
    assert len([e for e in disk.events if e.startswith("fsync journal")]) == 1
    durable.close()


class FailingSync:
    """A journal whose writes work and whose fsyncs fail (after the change was written)."""

    def append(self, *args: object) -> int:
        return 1

    def durable(self, lsn: int) -> None:
        raise JournalError("cannot fsync the journal: Input/output error")

    def flush(self) -> None:
        self.durable(0)

    def problem(self) -> str | None:
        return None


NOT_CONFIRMED = (
    "the change was recorded but could not be confirmed on disk (cannot fsync the journal: "
    "Input/output error); a retry records it again unless it carries the same Idempotency-Key"
)


def test_a_failed_fsync_after_the_change_says_it_was_recorded_not_confirmed() -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    store.attach_journal(FailingSync())
    app = create_app(Settings(rate_limit=1 / 3600, burst=2), store)
    client = app.test_client()
    device = SAMPLE_DEVICES[0]
    body = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 5}
    response = client.post(f"/api/v1/devices/{device}/stats", json=body)
    assert (response.status_code, response.json) == (503, {"msg": NOT_CONFIRMED})
    assert response.headers["Retry-After"] == "1"
    assert store.snapshot(device).upload_count == 1  # recorded, and kept
    assert "fleet_monitor_uploads_total 1.0" in client.get("/metrics").text
    batch = {"events": [{"device_id": device, "type": "upload", **body}]}
    assert client.post("/api/v1/events", json=batch).json == {"msg": NOT_CONFIRMED}
    # the rate's two tokens were spent by the two recorded uploads: none came back
    assert client.post(f"/api/v1/devices/{device}/stats", json=body).status_code == 429
    refused = {"events": [{"device_id": "nope", "type": "heartbeat", "sent_at": body["sent_at"]}]}
    response = client.post("/api/v1/events", json=refused)  # nothing recorded: nothing to wait
    assert response.json == {"accepted": 0, "rejected": [{"index": 0, "msg": "device not found"}]}
