"""A journal that cannot be written: 503 with Retry-After for writes, /readyz 503 degraded
naming the journal until a probe (or a write) succeeds, and one log line per 10 s."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.http.app import create_app
from fleet_monitor.http.readiness import DEGRADED, READY, STARTING, STOPPING, Readiness
from fleet_monitor.logs import configure_logging
from fleet_monitor.store import journal_health
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import Journal, JournalError, read_segment, segments
from fleet_monitor.store.journal_health import JournalHealth
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES
from tests.support.state import open_memory

HEARTBEAT = f"/api/v1/devices/{DEVICE}/heartbeat"
ENOSPC = "No space left on device"


def full_disk(fd: int, data: bytes) -> int:
    raise OSError(28, ENOSPC)


def beat(client: FlaskClient, minute: int) -> int:
    body = json.dumps({"sent_at": f"2024-04-02T09:{minute:02d}:00Z"})
    return client.post(HEARTBEAT, data=body).status_code


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MemoryStore, FlaskClient]:
    monkeypatch.setattr(journal_health, "PROBE_INTERVAL_S", 0.0)
    store = open_memory(tmp_path)
    return store, create_app(Settings(), store, readiness=Readiness(READY)).test_client()


def test_a_full_disk_degrades_readyz_until_space_is_free_again_without_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: tuple[MemoryStore, FlaskClient]
) -> None:
    store, client = served
    assert client.get("/readyz").json == {"status": "ready", "ready": True}
    with monkeypatch.context() as disk:
        disk.setattr(os, "write", full_disk)
        response = client.post(HEARTBEAT, data=json.dumps({"sent_at": "2024-04-02T09:00:00Z"}))
        assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
        for _ in range(2):  # the probe fails too while the disk is full
            ready = client.get("/readyz")
            assert (ready.status_code, ready.headers["Retry-After"]) == (503, "1")
            assert ready.json == {
                "status": "degraded",
                "ready": False,
                "reason": f"cannot write the journal: {ENOSPC} ({tmp_path})",
            }
    assert store.snapshot(DEVICE).last_heartbeat_ns is None
    ready = client.get("/readyz")  # no write came: the probe found room
    assert (ready.status_code, ready.json) == (200, {"status": "ready", "ready": True})
    assert not (tmp_path / journal_health.PROBE_FILE).exists()
    assert beat(client, 1) == 204


def test_a_write_that_succeeds_ends_the_degraded_state_at_once(
    monkeypatch: pytest.MonkeyPatch, served: tuple[MemoryStore, FlaskClient]
) -> None:
    monkeypatch.setattr(journal_health, "PROBE_INTERVAL_S", 3600.0)  # no probe in this test
    _, client = served
    with monkeypatch.context() as disk:
        disk.setattr(os, "write", full_disk)
        assert beat(client, 0) == 503
    assert client.get("/readyz").status_code == 503
    assert beat(client, 1) == 204
    assert client.get("/readyz").status_code == 200


def test_refused_writes_log_one_line_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: tuple[MemoryStore, FlaskClient]
) -> None:
    _, client = served
    stream = io.StringIO()
    configure_logging(logging.INFO, "json", stream)
    try:
        with monkeypatch.context() as disk:
            disk.setattr(os, "write", full_disk)
            statuses = {beat(client, minute % 60) for minute in range(200)}
    finally:
        configure_logging(logging.WARNING, "text")
    assert statuses == {503}
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines if line["level"] in ("warning", "error")] == [
        f"the journal in {tmp_path} failed (cannot write the journal: {ENOSPC}): /readyz "
        "answers 503 until it works again",
        f"cannot write the journal: {ENOSPC}: the change was refused",
    ]


def test_the_probe_runs_at_most_once_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    health = JournalHealth(tmp_path, clock=lambda: now[0])
    probes = []

    def probe() -> bool:
        probes.append(now[0])
        return False

    monkeypatch.setattr(health, "_probe", probe)
    health.failed("cannot write the journal: full", sync=False)
    for step in range(30):
        now[0] = 100.0 + step * 0.1
        assert health.problem() == f"cannot write the journal: full ({tmp_path})"
    assert probes == [101.0, 102.0]


def test_a_check_only_matters_once_ready() -> None:
    problem: list[str | None] = ["the disk is full"]
    readiness = Readiness()
    readiness.add_check(lambda: problem[0])
    assert readiness.status() == (STARTING, None)
    readiness.set_ready()
    assert readiness.status() == (DEGRADED, "the disk is full")
    problem[0] = None
    assert readiness.status() == (READY, None)
    problem[0] = "again"
    readiness.begin_stop()
    assert readiness.status() == (STOPPING, None)


def test_failed_periodic_snapshots_free_their_partial_file_and_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 1)
    durable.open(store, SAMPLE_DEVICES)
    store.record(DEVICE, Heartbeat(0), None)

    def broken(fd: int) -> None:
        raise OSError(28, ENOSPC)

    with monkeypatch.context() as disk:
        disk.setattr(os, "fsync", broken)
        with pytest.raises(OSError, match=ENOSPC):
            durable.snapshot()
        assert not (tmp_path / "snapshot.jsonl.tmp").exists()
        deadline = time.monotonic() + 10
        while caplog.text.count("periodic snapshot failed") < 2:  # the loop goes on
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    durable.close()
    assert "the last snapshot failed" not in caplog.text
    assert open_memory(tmp_path).snapshot(DEVICE).last_heartbeat_ns == 0


def test_a_partial_write_that_cannot_be_cut_off_is_cut_before_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path, 1, "no")
    journal.append("h", "d", sent_at_ns=1)
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 20:
            return real_write(fd, bytes(data)[:20])
        raise OSError(28, ENOSPC)

    def broken(fd: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as disk:
        disk.setattr(os, "write", half_then_full)
        disk.setattr(os, "ftruncate", broken)
        with pytest.raises(JournalError, match=ENOSPC):
            journal.append("h", "d", sent_at_ns=2)  # 20 bytes of it stay
    with monkeypatch.context() as disk:
        disk.setattr(os, "ftruncate", broken)
        with pytest.raises(JournalError, match="Input/output error"):
            journal.append("h", "d", sent_at_ns=3)  # not written after the partial one
    journal.append("h", "d", sent_at_ns=4)
    journal.close()
    [path] = segments(tmp_path)
    assert [e.sent_at_ns for e in read_segment(path, last=False, repair=False)] == [1, 4]
