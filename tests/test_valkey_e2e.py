"""Real processes on a real Valkey: two nodes sharing it, a node killed mid-load, the engine
killed, restarted, paused and absent, and ``--workers``."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import SAMPLE_DEVICES, live_server, run_cli
from tests.support import heartbeats
from tests.support.valkey import _free_port, start_engine

DEVICES = SAMPLE_DEVICES[:4]
HEARTBEAT = "/api/v1/devices/{}/heartbeat"


@pytest.fixture
def engine_url(valkey_url: str) -> str:
    """The session's Valkey, flushed."""
    engine = redis.Redis.from_url(valkey_url)
    engine.flushall()
    engine.close()
    return valkey_url


def send(urls: list[str], minutes: range, kill: tuple[int, subprocess.Popen[bytes]] | None = None
         ) -> set[tuple[str, int]]:  # fmt: skip
    """Each device's heartbeat of each minute, from 8 threads, spread over ``urls`` in turn
    (a node that does not answer: the next one); return the acknowledged ones. With ``kill``
    (after, process), SIGKILL that process once ``after`` are acknowledged."""
    work: queue.Queue[tuple[str, int]] = queue.Queue()
    for minute in minutes:
        for device in DEVICES:
            work.put((device, minute))
    acked: set[tuple[str, int]] = set()
    lock = threading.Lock()

    def sender(offset: int) -> None:
        session = requests.Session()
        turn = offset
        while True:
            try:
                device, minute = work.get_nowait()
            except queue.Empty:
                return
            for _ in range(len(urls)):
                url = urls[turn % len(urls)]
                turn += 1
                try:
                    response = session.post(
                        url + HEARTBEAT.format(device),
                        json={"sent_at": heartbeats.sent_at(minute)},
                        timeout=10,
                    )
                except requests.RequestException:
                    session = requests.Session()
                    continue  # that node is gone: the next one
                if response.status_code == 204:
                    with lock:
                        acked.add((device, minute))
                        if kill and len(acked) == kill[0]:
                            kill[1].kill()
                    break

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acked


def test_two_nodes_share_one_valkey_and_a_killed_node_loses_nothing(
    tmp_path: Path, engine_url: str
) -> None:
    args = ["--store", engine_url]
    with live_server(tmp_path, args) as a, live_server(tmp_path, args) as b:
        acked = send([a.url, b.url], range(150))
        assert len(acked) == len(DEVICES) * 150  # every one, exactly
        for url in (a.url, b.url):  # the same counts, read from either node
            assert heartbeats.stored(url, DEVICES, 150) == acked
            stats = requests.get(url + f"/api/v1/devices/{DEVICES[0]}/stats", timeout=10)
            assert stats.json() == {"uptime": 100.0, "avg_upload_time": "0s"}
        more = send([a.url, b.url], range(150, 450), kill=(400, a.process))
        a.process.wait(timeout=10)
        assert a.process.returncode == -signal.SIGKILL
        assert len(more) >= 400
        found = heartbeats.stored(b.url, DEVICES, 450)
    sent = {(device, minute) for device in DEVICES for minute in range(450)}
    assert acked | more <= found <= sent  # every acknowledged one; in-flight ones may be there


@pytest.fixture
def own_engine(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, int]]:
    """A Valkey of this test's own, AOF with an fsync per write: (process, url, dir, port)."""
    directory = tmp_path / "engine"
    directory.mkdir()
    port = _free_port()
    process, url = start_engine(directory, AOF_ALWAYS, port)
    state = [process]
    yield process, url, directory, port
    for each in state:
        if each.poll() is None:
            each.kill()
            each.wait()


AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always")


def post(url: str, device: str, minute: int) -> requests.Response:
    return requests.post(
        url + HEARTBEAT.format(device), json={"sent_at": heartbeats.sent_at(minute)}, timeout=10
    )


def wait_ready(url: str, seconds: float = 10) -> float:
    """Seconds until ``/readyz`` answers 200."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if requests.get(url + "/readyz", timeout=5).status_code == 200:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {seconds} s")


def test_an_engine_killed_and_restarted_is_a_503_then_reconnected_with_every_write(
    tmp_path: Path, own_engine: tuple[subprocess.Popen[bytes], str, Path, int]
) -> None:
    process, url, directory, port = own_engine
    device = DEVICES[0]
    with live_server(tmp_path, ["--store", url]) as server:
        for minute in range(10):
            assert post(server.url, device, minute).status_code == 204
        process.kill()
        process.wait()
        refused = post(server.url, device, 10)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["msg"].startswith("the store is unavailable: ")
        stats = requests.get(server.url + f"/api/v1/devices/{device}/stats", timeout=10)
        assert stats.status_code == 503
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False
        assert "cannot reach the store" in ready.json()["reason"]
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        again, _ = start_engine(directory, AOF_ALWAYS, port)  # the same data, from its AOF
        try:
            assert wait_ready(server.url) < 5
            assert post(server.url, device, 10).status_code == 204
            assert heartbeats.stored(server.url, [device], 11) == {(device, m) for m in range(11)}
        finally:
            again.terminate()
            again.wait()
        statuses = [line.get("status") for line in server.log_lines() if "status" in line]
    assert 500 not in statuses


def test_a_paused_engine_is_a_503_within_the_timeout_never_a_hang(
    tmp_path: Path, own_engine: tuple[subprocess.Popen[bytes], str, Path, int]
) -> None:
    process, url, _, _ = own_engine
    device = DEVICES[0]
    with live_server(tmp_path, ["--store", url]) as server:
        assert post(server.url, device, 0).status_code == 204
        process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            refused = post(server.url, device, 1)
            waited = time.monotonic() - started
        finally:
            process.send_signal(signal.SIGCONT)
        assert refused.status_code == 503
        assert 1.5 < waited < 4  # the engine call's 2 s timeout
        assert wait_ready(server.url) < 3
        assert post(server.url, device, 1).status_code == 204  # a retry is harmless
        assert heartbeats.stored(server.url, [device], 2) == {(device, 0), (device, 1)}


def test_an_engine_absent_at_start_keeps_readyz_503_until_it_comes(tmp_path: Path) -> None:
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "FLEET_MONITOR_PORT": "0", "FLEET_MONITOR_LOG_FORMAT": "json"}
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "fleet_monitor", "serve", "--store", url],
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    engine = None
    try:
        base = _listening(log_path)
        assert requests.get(base + "/readyz", timeout=5).status_code == 503
        answer = requests.get(base + f"/api/v1/devices/{DEVICES[0]}/stats", timeout=5)
        assert answer.status_code == 503
        engine, _ = start_engine(tmp_path, (), port)
        assert wait_ready(base) < 5
        assert post(base, DEVICES[0], 0).status_code == 204
    finally:
        server.terminate()
        server.wait(timeout=10)
        if engine is not None:
            engine.terminate()
            engine.wait()
    assert server.returncode == 0


def _listening(log_path: Path) -> str:
    """The URL a starting server logs as listening on (before it is ready)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if '"listen"' in line:
                return str(json.loads(line)["listen"][0])
        time.sleep(0.05)
    raise AssertionError(log_path.read_text())


# --- --workers ----------------------------------------------------------------------------


def test_workers_share_the_port_a_killed_worker_is_replaced_and_sigterm_stops_all(
    tmp_path: Path, engine_url: str
) -> None:
    with live_server(tmp_path, ["--store", engine_url, "--workers", "2"]) as server:
        _wait_for_workers(server.log_lines, 2, "ready")
        acked = send([server.url], range(100))
        assert len(acked) == len(DEVICES) * 100
        assert heartbeats.stored(server.url, DEVICES, 100) == acked
        served_by = {
            line["pid"]
            for line in server.log_lines()
            if str(line.get("path")).endswith("/heartbeat")
        }
        assert len(served_by) == 2  # both workers took connections
        workers = _wait_for_workers(server.log_lines, 2)
        os.kill(workers[0], signal.SIGKILL)
        replaced = _wait_for_workers(server.log_lines, 3)[2]
        assert post(server.url, DEVICES[0], 100).status_code == 204
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        for pid in (workers[1], replaced):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        ended = [line for line in server.log_lines() if line.get("exit_code") is not None]
        assert [line["exit_code"] for line in ended] == [-signal.SIGKILL]


def _wait_for_workers(
    log_lines: Callable[[], list[dict[str, object]]], count: int, event: str = "started"
) -> list[int]:
    """The pids of the first ``count`` workers started (or ready), waiting up to 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = log_lines()
        started = (
            [
                int(str(line["worker"]))
                for line in lines
                if "worker" in line and "exit_code" not in line
            ]
            if event == "started"
            else [int(str(line["pid"])) for line in lines if line.get("ready") is True]
        )
        if len(started) >= count:
            return started[:count]
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers started")


def test_workers_with_the_memory_store_is_a_usage_error() -> None:
    result = run_cli("serve", "--workers", "2", "--port", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "fleet-monitor: error: --workers 2 needs a shared store (--store redis://…): the "
        "memory store lives in one process, so it can only be served by one (--workers 1)\n"
    )
