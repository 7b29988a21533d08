"""The real process with --data-dir: kill -9 mid-load, SIGTERM, and damaged journals."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from fleet_monitor.store.journal import segments
from tests.conftest import SAMPLE_DEVICES, live_server, run_cli
from tests.support import heartbeats

DEVICES = SAMPLE_DEVICES[:4]
MINUTES = 800  # per device
START = "2024-04-02T00:00:00Z"
START_MINUTE = 28_533_600


def sent_at(minute: int) -> str:
    hours, minutes = divmod(minute, 60)
    days, hours = divmod(hours, 24)
    return f"2024-04-{2 + days:02d}T{hours:02d}:{minutes:02d}:00Z"


def load(
    url: str, kill_after: int | None, process: subprocess.Popen[bytes] | None
) -> set[tuple[str, int]]:
    """Send every device's heartbeats from 8 threads; return the acknowledged ones. With
    ``kill_after``, kill -9 the server once that many are acknowledged."""
    work: queue.Queue[tuple[str, int]] = queue.Queue()
    for minute in range(MINUTES):
        for device in DEVICES:
            work.put((device, minute))
    acked: set[tuple[str, int]] = set()
    lock = threading.Lock()
    killed = threading.Event()

    def sender() -> None:
        session = requests.Session()
        while not killed.is_set():
            try:
                device, minute = work.get_nowait()
            except queue.Empty:
                return
            try:
                response = session.post(
                    f"{url}/api/v1/devices/{device}/heartbeat",
                    json={"sent_at": sent_at(minute)},
                    timeout=10,
                )
            except requests.RequestException:
                return  # the server is gone
            if response.status_code == 204:
                with lock:
                    acked.add((device, minute))
                    due = kill_after is not None and len(acked) >= kill_after
                    if due and process and not killed.is_set():
                        process.kill()
                        killed.set()

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acked


def stored(url: str) -> set[tuple[str, int]]:
    """Every (device, minute) the server holds a heartbeat for, from the 1-minute series."""
    found = set()
    end = sent_at(MINUTES)
    for device in DEVICES:
        response = requests.get(
            f"{url}/api/v1/devices/{device}/uptime",
            params={"start": START, "end": end, "step": "1m"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        for index, bucket in enumerate(response.json()["buckets"]):
            if bucket["minutes_with_heartbeat"]:
                found.add((device, index))
    return found


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_kill_9_mid_load_loses_no_acknowledged_heartbeat(tmp_path: Path, fsync: str) -> None:
    data = tmp_path / "state"
    args = ["--data-dir", str(data), "--fsync", fsync]
    with live_server(tmp_path, args) as server:
        acked = load(server.url, kill_after=1500, process=server.process)
        server.process.wait(timeout=10)
        assert server.process.returncode == -signal.SIGKILL
    assert len(acked) >= 1500
    with live_server(tmp_path, args) as server:
        found = stored(server.url)
    sent = {(device, minute) for device in DEVICES for minute in range(MINUTES)}
    assert acked <= found <= sent  # every acknowledged one; in-flight ones may be there too


def test_sigterm_keeps_everything_and_the_next_start_replays_nothing(tmp_path: Path) -> None:
    data = tmp_path / "state"
    args = ["--data-dir", str(data)]
    with live_server(tmp_path, args) as server:
        acked = load(server.url, kill_after=None, process=None)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    assert len(acked) == len(DEVICES) * MINUTES
    with live_server(tmp_path, args) as server:
        assert stored(server.url) == acked
        lines = server.log_lines()
    [loaded] = [line for line in lines if "replayed" in line]
    assert loaded["replayed"] == 0


def record_offsets(raw: bytes | bytearray) -> list[int]:
    """Where each record of a segment's bytes starts."""
    offsets, offset = [], 4
    while offset < len(raw):
        offsets.append(offset)
        offset += 8 + int.from_bytes(raw[offset : offset + 4], "little")
    return offsets


def test_a_corrupt_journal_stops_the_start_unless_repair_which_skips_only_the_damage(
    tmp_path: Path,
) -> None:
    data = tmp_path / "state"
    args = ["--data-dir", str(data), "--snapshot-every", "0"]
    device = DEVICES[0]
    with live_server(tmp_path, args) as server:
        for minute in range(60):
            response = requests.post(
                f"{server.url}/api/v1/devices/{device}/heartbeat",
                json={"sent_at": sent_at(minute)},
                timeout=10,
            )
            assert response.status_code == 204
        server.process.kill()
        server.process.wait(timeout=10)
    [path] = segments(data)
    raw = bytearray(path.read_bytes())
    offsets = record_offsets(raw)
    raw[offsets[30] : offsets[30] + 4] = b"\xff\xff\xff\x7f"  # a length past the end of the file
    path.write_bytes(bytes(raw))
    result = run_cli("serve", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"fleet-monitor: error: {path}: corrupt journal record at offset {offsets[30]} (an "
        f"incomplete record); the next valid record is at offset {offsets[31]}: start with "
        f"--repair to skip the {offsets[31] - offsets[30]} damaged bytes\n"
    )
    kept = {(device, minute) for minute in range(60) if minute != 30}
    with live_server(tmp_path, [*args, "--repair"]) as server:
        assert heartbeats.stored(server.url, [device], 60) == kept
        server.process.kill()  # no last snapshot: the next start reads the repaired segment
        server.process.wait(timeout=10)
        [warning] = [line for line in server.log_lines() if line["level"] == "warning"]
    assert warning["skipped_bytes"] == offsets[31] - offsets[30]
    assert (warning["first_lsn"], warning["last_lsn"]) == (31, 31)
    assert "--repair skipped" in str(warning["msg"])
    with live_server(tmp_path, args) as server:
        assert heartbeats.stored(server.url, [device], 60) == kept


def test_a_damaged_snapshot_stops_the_start_in_one_line_unless_repair(tmp_path: Path) -> None:
    data = tmp_path / "state"
    args = ["--data-dir", str(data), "--snapshot-every", "0"]
    device = DEVICES[0]
    for minutes in (range(0, 30), range(30, 60)):  # two runs: two snapshots
        with live_server(tmp_path, args) as server:
            for minute in minutes:
                response = requests.post(
                    f"{server.url}/api/v1/devices/{device}/heartbeat",
                    json={"sent_at": sent_at(minute)},
                    timeout=10,
                )
                assert response.status_code == 204
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=10)
    snapshot = data / "snapshot.jsonl"
    snapshot.write_bytes(snapshot.read_bytes().replace(b'"count":', b'"count":1', 1))
    result = run_cli("serve", "--port", "0", *args)
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"fleet-monitor: error: {snapshot}: the snapshot is damaged (its checksum does not "
        "match) (start with --repair to fall back)\n"
    )
    with live_server(tmp_path, [*args, "--repair"]) as server:
        assert heartbeats.stored(server.url, [device], 60) == {(device, m) for m in range(60)}
