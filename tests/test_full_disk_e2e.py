"""The real process on a full disk (a small tmpfs): writes answer 503, /readyz turns 503
degraded and back to 200 by itself once space is freed, and nothing acknowledged is lost."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import DEVICE, live_server
from tests.support.heartbeats import sent_at, stored

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None,
    reason="mounting a small tmpfs (the full disk) needs root and mount(8)",
)
DEADLINE_S = 15.0  # liveness only: recovery takes about a second (one probe)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(bytes(64 * 1024))
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_full_disk_refuses_writes_degrades_readiness_and_recovers(
    tmp_path: Path, small_disk: Path
) -> None:
    args = ["--data-dir", str(small_disk / "state"), "--snapshot-every", "1"]
    url = f"/api/v1/devices/{DEVICE}/heartbeat"
    acked, statuses = set(), []
    with live_server(tmp_path, args) as server:
        session = requests.Session()

        def beat(minute: int) -> int:
            response = session.post(server.url + url, json={"sent_at": sent_at(minute)}, timeout=10)
            if response.status_code == 204:
                acked.add((DEVICE, minute))
            return response.status_code

        assert [beat(minute) for minute in range(20)] == [204] * 20
        fill(small_disk / "filler")
        statuses = [beat(minute) for minute in range(20, 400)]  # a last page may fill first
        assert 503 in statuses
        assert set(statuses[statuses.index(503) :]) == {503}
        ready = session.get(server.url + "/readyz", timeout=10)
        assert (ready.status_code, ready.headers["Retry-After"]) == (503, "1")
        assert ready.json()["status"] == "degraded" and ready.json()["ready"] is False
        assert "No space left on device" in ready.json()["reason"]
        assert str(small_disk / "state") in ready.json()["reason"]
        (small_disk / "filler").unlink()
        deadline = time.monotonic() + DEADLINE_S
        while session.get(server.url + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "/readyz did not recover"
            time.sleep(0.1)
        assert beat(400) == 204
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=DEADLINE_S) == 0
        refused = [line for line in server.log_lines() if "was refused" in str(line["msg"])]
    assert len(refused) == 1  # the rest were held back by the log's throttle
    with live_server(tmp_path, args) as server:
        assert stored(server.url, [DEVICE], 401) == acked
