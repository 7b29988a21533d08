"""The real process on a slow disk (every fsync takes 20 to 50 ms) with a snapshot every
second: it keeps answering, stops on SIGTERM, and keeps every acknowledged heartbeat."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import live_server
from tests.support.heartbeats import Poller, drive, stored

SLOW_SERVE = (sys.executable, "-m", "tests.support.slow_fsync", "serve")
LOAD_SECONDS = 3.0
STOP_DEADLINE_S = 15  # liveness only: a clean stop takes well under a second
DEVICES = [f"slow-{n:02d}" for n in range(16)]  # many writers: the old freeze came in ~1 s


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_snapshots_on_a_slow_disk_never_freeze_the_service(tmp_path: Path, fsync: str) -> None:
    data = tmp_path / "state"
    args = ["--data-dir", str(data), "--fsync", fsync, "--snapshot-every", "1"]
    with live_server(tmp_path, args, command=SLOW_SERVE) as server:
        for device in DEVICES:
            assert requests.put(f"{server.url}/api/v1/devices/{device}", timeout=10).ok
        with Poller(f"{server.url}/healthz") as health:
            traffic = drive(server.url, DEVICES, LOAD_SECONDS)
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no stop within {STOP_DEADLINE_S} s of SIGTERM")
        snapshots = [line for line in server.log_lines() if "snapshot_devices" in line]
    assert traffic.unanswered == []
    assert set(traffic.statuses) == {204}
    assert health.failures == [] and health.answers > 0
    assert code == 0
    assert len(snapshots) >= 2  # the periodic ones ran during the load
    assert len(traffic.acked) > 50
    with live_server(tmp_path, args[:-2]) as server:
        assert stored(server.url, DEVICES) == traffic.acked
