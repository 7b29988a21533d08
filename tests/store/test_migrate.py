"""fleet-monitor migrate: a data dir (snapshot and journal tail) copied into a real Valkey,
read only, idempotent, and checked device by device."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from fleet_monitor.domain.errors import IdempotencyConflictError, UnknownDeviceError
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.domain.idempotency import KeyMemory
from fleet_monitor.domain.maintenance import parse_window
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.timestamps import MIN_UNIX_NS
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import segments
from fleet_monitor.store.memory import MemoryStore
from fleet_monitor.store.migrate import (
    MigrationError,
    Report,
    check,
    copy,
    engine_bits,
    load,
    migrate,
)
from fleet_monitor.store.protocol import Store
from fleet_monitor.store.valkey import ValkeyStore
from tests.conftest import DEVICE, SAMPLE_DEVICES, observed, run_cli
from tests.support.state import BASE, MINUTE_NS, open_memory

GONE = SAMPLE_DEVICES[1]
FAR_MINUTE = 2**33  # far beyond year 9999: the memory store takes it from the journal


WINDOW = parse_window({"selector": {"site": "Zürich"}, "cron": "0 2 * * 0", "duration": 600}, BASE)


def fill_before_snapshot(store: Store) -> None:
    """Heartbeats with keys, a whole chunk of minutes, uploads past 2^53 ns, far years."""
    for n in range(1, 40):
        store.record(DEVICE, Heartbeat(BASE + n * 61 * 10**9), f"k{n}")
        store.record(DEVICE, Upload(BASE + n * MINUTE_NS, 2**53 + n), f"u{n}")
    store.record(DEVICE, Upload(BASE, 2**63 - 1), None)
    store.record(DEVICE, Upload(BASE, 0), None)
    for minute in range(4096):  # chunk 8192 of SAMPLE_DEVICES[2], every minute: a full one
        store.record(SAMPLE_DEVICES[2], Heartbeat((8192 * 4096 + minute) * MINUTE_NS), None)
    store.record(SAMPLE_DEVICES[3], Heartbeat(FAR_MINUTE * MINUTE_NS + 7), "far")
    store.record(SAMPLE_DEVICES[3], Heartbeat(MIN_UNIX_NS), "year-1")
    store.record(SAMPLE_DEVICES[3], Upload(MIN_UNIX_NS, 3), None)
    store.register("cam-07")
    store.record("cam-07", Heartbeat(BASE, received_ns=BASE + 123), None)  # with its receipt
    store.remove(GONE)


def fill_after_snapshot(store: Store) -> None:
    """The journal's tail: more of the same, a removal and a device registered again."""
    store.record(DEVICE, Heartbeat(BASE - 5 * MINUTE_NS, received_ns=BASE + 9), "late")
    store.record(DEVICE, Upload(BASE + 7 * MINUTE_NS, 2**62 + 1), "late")
    store.register("gone")
    store.record("gone", Heartbeat(BASE), "g")
    store.remove("gone")
    store.register("cam-08")
    store.record("cam-08", Upload(BASE, 10**9), "only-an-upload")
    store.set_profile("cam-08", Profile((("site", "Zürich"),), 300, 0))
    store.add_maintenance(WINDOW)
    store.record(SAMPLE_DEVICES[2], Heartbeat((8192 * 4096 + 4096) * MINUTE_NS), None)


def write_state(directory: Path) -> tuple[MemoryStore, DurableStore]:
    """A data dir with a snapshot and a journal after it, left as after kill -9 (no close);
    the store that wrote it."""
    store = MemoryStore()
    durable = DurableStore(directory, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    fill_before_snapshot(store)
    durable.snapshot()
    fill_after_snapshot(store)
    return store, durable


@pytest.fixture
def target(valkey_url: str) -> Iterator[str]:
    """A database of the session's engine of its own (db 5), empty."""
    url = valkey_url.rsplit("/", 1)[0] + "/5"
    engine = redis.Redis.from_url(url)
    engine.flushdb()
    yield url
    engine.flushdb()
    engine.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, MemoryStore]]:
    """The data dir and the store that wrote it (its journal closed after the test)."""
    directory = tmp_path / "state"
    store, durable = write_state(directory)
    yield directory, store
    assert durable._journal is not None
    durable._journal.close()


@pytest.fixture
def valkey(target: str) -> Iterator[ValkeyStore]:
    store = ValkeyStore(target)
    yield store
    store.close()


def fingerprint(directory: Path) -> dict[str, str]:
    """Each file of ``directory`` and the sha256 of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def engine_contents(url: str) -> dict[bytes, object]:
    """Every key of the engine's database, type-aware, with whether it expires."""
    engine = redis.Redis.from_url(url)
    contents: dict[bytes, object] = {}
    for key in engine.scan_iter(count=1000):
        kind = engine.type(key)
        contents[key] = (kind, engine.dump(key), engine.ttl(key) > 0)
    engine.close()
    return contents


def readable_contents(url: str) -> dict[bytes, object]:
    """The engine's database as values (not encodings): hashes as dicts, upload members
    without their sequence numbers (a replay numbers them by arrival, a copy by minute)."""
    engine = redis.Redis.from_url(url)
    contents: dict[bytes, object] = {}
    for key in engine.scan_iter(count=1000):
        kind = cast(bytes, engine.type(key)).decode()
        value: object
        if kind == "hash":
            fields = cast(dict[bytes, bytes], engine.hgetall(key))
            value = fields | ({b"seq": b"<count>"} if b"seq" in fields else {})
        elif kind == "set":
            value = sorted(cast(set[bytes], engine.smembers(key)))
        elif kind == "list":
            value = engine.lrange(key, 0, -1)
        elif kind == "zset" and key.endswith(b":u"):
            members = cast(list[tuple[bytes, float]], engine.zrange(key, 0, -1, withscores=True))
            value = sorted((score, member.split(b":")[1]) for member, score in members)
        elif kind == "zset":
            value = engine.zrange(key, 0, -1, withscores=True)
        else:
            value = engine.get(key)
        contents[key] = (kind, value, engine.ttl(key) > 0)
    engine.close()
    return contents


# --- the copy ------------------------------------------------------------------------------


def test_every_device_reads_the_same_from_the_engine(
    state: tuple[Path, MemoryStore], target: str, valkey: ValkeyStore
) -> None:
    directory, written = state
    report = migrate(directory, target, SAMPLE_DEVICES)
    assert report.matches and report.verified == len(written) == report.devices
    assert sorted(valkey) == sorted(written.ids_after(None, 100))
    for device_id in written.ids_after(None, 100):
        assert observed(valkey, device_id) == observed(written, device_id), device_id
    snapshot = valkey.snapshot(SAMPLE_DEVICES[3])
    assert snapshot.last_minute == FAR_MINUTE
    assert snapshot.first_heartbeat_ns == MIN_UNIX_NS
    assert valkey.upload_aggregates(DEVICE, [(BASE // MINUTE_NS, BASE // MINUTE_NS + 1)]) == (
        written.upload_aggregates(DEVICE, [(BASE // MINUTE_NS, BASE // MINUTE_NS + 1)])
    )
    assert valkey.snapshot(DEVICE).upload_max_ns == 2**63 - 1
    assert valkey.history_bytes() == written.history_bytes() == report.history_bytes
    assert report.minutes == sum(s.heartbeat_minutes for s in written.snapshots())
    assert report.uploads == sum(s.upload_count for s in written.snapshots())
    assert report.removed == 2  # GONE and "gone"
    assert valkey.snapshot("cam-07").last_received_ns == BASE + 123
    assert valkey.snapshot("cam-08").profile == Profile((("site", "Zürich"),), 300, 0)
    assert valkey.maintenance() == [WINDOW]
    assert valkey.snapshot(DEVICE).clock_skew_ns == -5 * MINUTE_NS - 9


def test_the_engine_holds_what_the_same_writes_through_the_valkey_store_leave(
    state: tuple[Path, MemoryStore], target: str
) -> None:
    """The copy writes the keys the write scripts would have: replayed into another
    database, the same events leave the same values (upload numbering aside)."""
    directory, _ = state
    migrate(directory, target, SAMPLE_DEVICES)
    replayed_url = target.rsplit("/", 1)[0] + "/6"
    engine = redis.Redis.from_url(replayed_url)
    engine.flushdb()
    replayed = ValkeyStore(replayed_url)
    try:
        replayed.add_all(SAMPLE_DEVICES)
        fill_before_snapshot(replayed)
        fill_after_snapshot(replayed)
        assert readable_contents(target) == readable_contents(replayed_url)
    finally:
        replayed.close()
        engine.flushdb()
        engine.close()


def test_removed_ids_stay_removed(
    state: tuple[Path, MemoryStore], target: str, valkey: ValkeyStore
) -> None:
    directory, _ = state
    migrate(directory, target, SAMPLE_DEVICES)
    engine = redis.Redis.from_url(target)
    assert engine.smembers("fm:removed") == {GONE.encode(), b"gone"}
    engine.close()
    assert GONE not in valkey and "gone" not in valkey
    assert valkey.add_all(SAMPLE_DEVICES) == 0  # the devices file does not bring it back
    with pytest.raises(UnknownDeviceError):
        valkey.record(GONE, Heartbeat(BASE), None)


def test_idempotency_keys_are_carried_over(
    state: tuple[Path, MemoryStore], target: str, valkey: ValkeyStore
) -> None:
    directory, _ = state
    report = migrate(directory, target, SAMPLE_DEVICES)
    assert report.keys == 39 * 2 + 2 + 2 + 1  # k*, u*, late twice, far, year-1, only-an-upload
    before = observed(valkey, DEVICE)
    assert valkey.record(DEVICE, Heartbeat(BASE + 3 * 61 * 10**9), "k3") is False
    assert valkey.record(DEVICE, Upload(BASE + 3 * MINUTE_NS, 2**53 + 3), "u3") is False
    assert valkey.record(DEVICE, Heartbeat(BASE - 5 * MINUTE_NS), "late") is False
    assert valkey.record("cam-08", Upload(BASE, 10**9), "only-an-upload") is False
    assert observed(valkey, DEVICE) == before  # nothing recorded twice
    with pytest.raises(IdempotencyConflictError):
        valkey.record(DEVICE, Heartbeat(BASE), "k3")
    with pytest.raises(IdempotencyConflictError):
        valkey.record(DEVICE, Upload(BASE, 1), "u3")
    assert valkey.record(DEVICE, Upload(BASE, 1), "k3") is True  # another kind's key
    engine = redis.Redis.from_url(target)
    ttl = engine.ttl("fm:{" + DEVICE + "}:k:heartbeat:k3")
    assert 29 * 24 * 3600 < ttl <= 30 * 24 * 3600
    engine.close()


def test_running_it_twice_leaves_the_same_engine(
    state: tuple[Path, MemoryStore], target: str
) -> None:
    directory, _ = state
    first = migrate(directory, target, SAMPLE_DEVICES)
    contents = engine_contents(target)
    second = migrate(directory, target, SAMPLE_DEVICES)
    assert engine_contents(target) == contents
    assert second == first
    assert first.notes == []  # fm:bytes was right all along


def test_a_device_the_engine_held_is_replaced_and_the_bytes_recounted(
    state: tuple[Path, MemoryStore], target: str, valkey: ValkeyStore
) -> None:
    directory, written = state
    valkey.add_all([DEVICE, "other"])
    for minute in range(3):  # minutes the dir does not hold
        valkey.record(DEVICE, Heartbeat((10**7 + minute * 5000) * MINUTE_NS), f"x{minute}")
    valkey.record("other", Upload(BASE, 5), None)
    engine = redis.Redis.from_url(target)
    engine.incrby("fm:bytes", 1000)  # a count gone wrong
    report = migrate(directory, target, SAMPLE_DEVICES)
    assert report.matches
    assert observed(valkey, DEVICE) == observed(written, DEVICE)
    assert valkey.snapshot("other").upload_count == 1  # not in the dir: left as it was
    other = int(engine.hget("fm:{other}:d", "cost") or 0)
    assert valkey.history_bytes() == written.history_bytes() + other
    assert report.notes == [
        f"the engine counted {written.history_bytes() + other + 1000} history bytes for "
        f"{written.history_bytes() + other}: recounted"
    ]
    assert engine.exists("fm:{" + DEVICE + "}:k:heartbeat:x0") == 0
    engine.close()


def test_a_difference_is_reported(state: tuple[Path, MemoryStore], target: str) -> None:
    directory, written = state
    migrate(directory, target, SAMPLE_DEVICES)
    engine = redis.Redis.from_url(target)
    engine.hincrby("fm:{" + DEVICE + "}:d", "n", 1)
    engine.sadd("fm:removed", "x")
    engine.srem("fm:removed", GONE)
    valkey = ValkeyStore(target)
    report = Report(devices=len(written))
    check(written, valkey, engine, report)
    valkey.close()
    engine.close()
    [line] = report.differences
    assert line.startswith(f"{DEVICE}: counters DeviceSnapshot(")
    assert report.not_removed == [GONE]
    assert report.verified == len(written) - 1 and not report.matches


def test_a_key_of_an_older_snapshot_is_a_repeat_of_any_event_on_both_stores(
    target: str, valkey: ValkeyStore
) -> None:
    """Its fingerprint is unknown: both stores take any event as its repeat (the engine keeps
    it as "*")."""
    store = MemoryStore([DEVICE])
    store.device(DEVICE).history.keys = KeyMemory.from_items([("heartbeat", "old", None)])
    engine = redis.Redis.from_url(target)
    report = Report()
    copy(store, engine, report)
    check(store, valkey, engine, report)
    assert engine.get("fm:{" + DEVICE + "}:k:heartbeat:old") == b"*"
    engine.close()
    assert report.matches and report.keys == 1
    assert store.record(DEVICE, Heartbeat(BASE), "old") is False
    assert valkey.record(DEVICE, Heartbeat(BASE), "old") is False
    assert valkey.snapshot(DEVICE).heartbeat_minutes == 0


# --- the source, read only -------------------------------------------------------------------


def test_the_dir_is_read_only_even_with_a_torn_tail(
    state: tuple[Path, MemoryStore], target: str
) -> None:
    directory, written = state
    last = segments(directory)[-1]
    with last.open("ab") as out:
        out.write(b'\x20\x00\x00\x00\x01\x02\x03\x04{"')  # a record cut short by a crash
    before = fingerprint(directory)
    report = migrate(directory, target, SAMPLE_DEVICES)
    assert fingerprint(directory) == before  # no segment, snapshot or cut
    assert report.matches and report.verified == len(written)
    [note] = report.notes
    assert note.startswith(f"{last}: skipped 10 bytes at offset ")
    assert "(an incomplete record)" in note
    # the same state as the start would load (on a copy: the start cuts the tail off)
    copy = directory.parent / "copy"
    shutil.copytree(directory, copy)
    started = open_memory(copy)
    notes: list[str] = []
    loaded, _ = load(directory, SAMPLE_DEVICES, notes)
    assert sorted(loaded.ids_after(None, 100)) == sorted(started.ids_after(None, 100))
    for device_id in started.ids_after(None, 100):
        assert observed(loaded, device_id) == observed(started, device_id)
    assert loaded.removed == started.removed


def test_a_journal_without_snapshot_needs_the_devices_file(tmp_path: Path, target: str) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    store.record(DEVICE, Heartbeat(BASE), None)  # a device of the file: no registration
    report = migrate(tmp_path, target, SAMPLE_DEVICES)
    assert durable._journal is not None
    durable._journal.close()
    assert report.matches and report.minutes == 1 and report.devices == len(SAMPLE_DEVICES)


def test_a_damaged_journal_is_refused_in_one_line(
    state: tuple[Path, MemoryStore], target: str
) -> None:
    directory, _ = state
    first = segments(directory)[0]
    data = bytearray(first.read_bytes())
    data[40] ^= 0xFF
    first.write_bytes(bytes(data))
    before = fingerprint(directory)
    with pytest.raises(MigrationError) as raised:
        migrate(directory, target, SAMPLE_DEVICES)
    message = str(raised.value)
    assert message.startswith(f"{first}: corrupt journal record at offset ")
    assert "fleet-monitor serve --repair" in message and "\n" not in message
    assert fingerprint(directory) == before
    assert redis.Redis.from_url(target).dbsize() == 0  # nothing written


def test_a_journal_that_starts_too_late_is_refused(
    state: tuple[Path, MemoryStore], target: str
) -> None:
    directory, _ = state
    for path in segments(directory):
        path.unlink()
    (directory / "journal-999999.log").write_bytes(b"FMJ1")
    with pytest.raises(MigrationError, match="changes are missing"):
        migrate(directory, target, SAMPLE_DEVICES)


def test_a_damaged_snapshot_is_refused(state: tuple[Path, MemoryStore], target: str) -> None:
    directory, _ = state
    snapshot = directory / "snapshot.jsonl"
    snapshot.write_bytes(snapshot.read_bytes().replace(b'"lsn"', b'"lsm"', 1))
    with pytest.raises(MigrationError, match="the snapshot is damaged"):
        migrate(directory, target, SAMPLE_DEVICES)


def test_bits_are_reversed_into_the_engines_order() -> None:
    assert engine_bits(bytes([0b0000_0001, 0b1000_0000, 0, 0])) == bytes([0b1000_0000, 1])
    assert engine_bits(b"\xff" * 512) == b"\xff" * 512


# --- the command line --------------------------------------------------------------------


def test_the_command_copies_checks_and_counts(
    state: tuple[Path, MemoryStore], target: str, tmp_path: Path
) -> None:
    directory, written = state
    devices = tmp_path / "devices.csv"
    devices.write_text("device_id\n" + "\n".join(SAMPLE_DEVICES) + "\n")
    args = ("migrate", "--from", str(directory), "--to", target, "--devices", str(devices))
    result = run_cli(*args)
    assert (result.returncode, result.stderr) == (0, "")
    minutes = sum(s.heartbeat_minutes for s in written.snapshots())
    uploads = sum(s.upload_count for s in written.snapshots())
    replayed = 10  # fill_after_snapshot's changes
    assert result.stdout.splitlines() == [
        f"copied {directory} into {target}",
        f"journal records replayed: {replayed}",
        f"devices: {len(written)}",
        "removed ids: 2",
        f"heartbeat minutes: {minutes}",
        f"uploads: {uploads}",
        "idempotency keys: 83",
        "maintenance windows: 1",
        f"history bytes: {written.history_bytes()}",
        f"verified: {len(written)} devices match",
    ]
    assert run_cli(*args).stdout == result.stdout  # again: the same


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "case", ["missing dir", "damaged journal", "unreachable", "not a url", "memory"]
)
def test_the_command_fails_in_one_line_with_status_2(
    case: str, state: tuple[Path, MemoryStore], target: str, tmp_path: Path
) -> None:
    directory, _ = state
    url = target
    if case == "missing dir":
        directory = tmp_path / "nowhere"
    elif case == "damaged journal":
        first = segments(directory)[0]
        data = bytearray(first.read_bytes())
        data[40] ^= 0xFF
        first.write_bytes(bytes(data))
    elif case == "unreachable":
        url = f"redis://127.0.0.1:{_closed_port()}/0"
    else:
        url = {"not a url": "127.0.0.1:6379", "memory": "memory"}[case]
    result = run_cli("migrate", "--from", str(directory), "--to", url)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()[-1:]
    expected = {
        "missing dir": f"fleet-monitor: error: {directory}: no such data directory",
        "damaged journal": "fleet-monitor: error: ",
        "unreachable": f"fleet-monitor: error: {url}: ConnectionError: ",
        "not a url": "fleet-monitor migrate: error: argument --to: must be the URL of a Valkey",
        "memory": "fleet-monitor migrate: error: argument --to: must be the URL of a Valkey",
    }[case]
    assert line.startswith(expected), result.stderr
    if case not in ("not a url", "memory"):
        assert len(result.stderr.splitlines()) == 1, result.stderr
    if case == "damaged journal":
        assert "corrupt journal record at offset" in line
    assert os.path.exists(directory) == (case != "missing dir")
