"""What only the Valkey store has: its engine's refusals and faults, its key layout's upkeep.
(Everything both stores share runs against both through the ``store`` fixture.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleet_monitor.config import Settings
from fleet_monitor.domain.bitmaps import CHUNK_MINUTES
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.http.app import create_app
from fleet_monitor.store.valkey import ValkeyStore
from fleet_monitor.store.valkey_engine import EngineUnavailableError, engine_url, safe_url
from tests.conftest import DEVICE, SAMPLE_DEVICES, empty_store
from tests.support.state import BASE, MINUTE_NS
from tests.support.valkey import start_engine


@pytest.fixture
def valkey(request: pytest.FixtureRequest) -> ValkeyStore:
    store = empty_store("valkey", request)
    assert isinstance(store, ValkeyStore)
    store.add_all(SAMPLE_DEVICES)
    return store


@pytest.fixture
def engine(valkey_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(valkey_url)
    yield client
    client.close()


def test_a_key_whose_string_expired_is_listed_and_counted_once(
    valkey: ValkeyStore, engine: redis.Redis
) -> None:
    assert valkey.record(DEVICE, Heartbeat(BASE), "k") is True
    cost = int(engine.hget("fm:{" + DEVICE + "}:d", "cost") or 0)
    engine.delete("fm:{" + DEVICE + "}:k:heartbeat:k")  # as after its 30 days
    assert valkey.record(DEVICE, Heartbeat(BASE + MINUTE_NS), "k") is True  # a new key now
    assert engine.lrange("fm:{" + DEVICE + "}:kq", 0, -1) == [b"heartbeat:k"]
    assert int(engine.hget("fm:{" + DEVICE + "}:d", "cost") or 0) == cost  # same chunk, same key
    assert valkey.history_bytes() == cost


def test_a_removal_leaves_no_key_of_the_device_behind(
    valkey: ValkeyStore, engine: redis.Redis
) -> None:
    valkey.record(DEVICE, Heartbeat(BASE), "k")
    valkey.record(DEVICE, Upload(BASE, 5), "u")
    valkey.remove(DEVICE)
    assert [key for key in engine.keys("*") if DEVICE.encode() in key] == []
    assert engine.zscore("fm:lastseen", DEVICE) is None
    assert engine.sismember("fm:removed", DEVICE)
    assert valkey.history_bytes() == 0


@pytest.fixture
def small_engine(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A Valkey of its own with 2 MB of memory at most."""
    process, url = start_engine(tmp_path, ("--maxmemory", "2mb"))
    yield process, url
    process.kill()
    process.wait()


def test_an_engine_out_of_memory_is_a_503_and_nothing_is_applied(
    small_engine: tuple[subprocess.Popen[bytes], str],
) -> None:
    _, url = small_engine
    store = ValkeyStore(url)
    store.add_all(SAMPLE_DEVICES)
    client = create_app(Settings(), store).test_client()
    engine = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        for n in range(1000):
            engine.set(f"filler-{n}", b"x" * 10_000)
    before = {key: engine.dump(key) for key in engine.keys("fm:*")}
    response = client.post(
        f"/api/v1/devices/{DEVICE}/stats",
        data=json.dumps({"sent_at": "2024-04-02T09:00:00Z", "upload_time": 5}),
        headers={"Idempotency-Key": "first"},
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json is not None
    assert response.json["msg"].startswith(f"the store is unavailable: {url} refused the change (")
    assert "maxmemory" in response.json["msg"]
    assert {key: engine.dump(key) for key in engine.keys("fm:*")} == before  # not a byte
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json is not None
    assert ready.json["reason"].startswith("the store refuses changes: ")
    engine.flushdb()  # room again: the retry goes through
    store.add_all(SAMPLE_DEVICES)
    time.sleep(1.05)
    assert client.get("/readyz").status_code == 200
    engine.close()
    store.close()


def test_readyz_sees_an_engine_gone_before_any_write_fails(
    small_engine: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = small_engine
    store = ValkeyStore(url, timeout_s=0.5)
    store.add_all(SAMPLE_DEVICES)
    client = create_app(Settings(), store).test_client()
    assert client.get("/readyz").status_code == 200
    process.kill()
    process.wait()
    time.sleep(1.05)  # the probe's interval
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json is not None
    assert ready.json["reason"].startswith(f"cannot reach the store: {url} did not answer")
    with pytest.raises(EngineUnavailableError):
        store.snapshot(DEVICE)
    store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("valkey://u:p@h:6379/2", "redis://u:p@h:6379/2"),
        ("valkeys://h:6380/0", "rediss://h:6380/0"),
        ("unix:///run/valkey.sock", "unix:///run/valkey.sock"),
        ("unix:///run/valkey.sock?db=3", "unix:///run/valkey.sock?db=3"),
    ],
)
def test_engine_url_renames_only_the_valkey_schemes(url: str, expected: str) -> None:
    assert engine_url(url) == expected


def test_safe_url_hides_only_the_password() -> None:
    assert safe_url("redis://user:secret@h:6379/0") == "redis://user:***@h:6379/0"
    assert safe_url("redis://h:6379/0") == "redis://h:6379/0"
    assert safe_url("unix:///run/valkey.sock") == "unix:///run/valkey.sock"


def test_a_store_over_a_unix_socket() -> None:
    directory = Path(tempfile.mkdtemp(prefix="vk-", dir="/tmp"))  # a socket path is short
    socket = directory / "v.sock"
    process, _ = start_engine(directory, ("--unixsocket", str(socket)))
    try:
        store = ValkeyStore(f"unix://{socket}")
        assert store.add_all(["a"]) == 1
        assert store.record("a", Heartbeat(BASE), None) is True
        assert store.record("a", Heartbeat(BASE), None) is False
        assert store.snapshot("a").heartbeat_minutes == 1
        assert store.problem() is None
        store.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def test_an_engine_refusing_the_database_is_a_503_not_a_500(valkey_url: str) -> None:
    store = ValkeyStore(valkey_url.rsplit("/", 1)[0] + "/99999")
    try:
        with pytest.raises(EngineUnavailableError) as raised:
            store.add_all(["a"])
        assert "refused the change (DB index is out of range)" in str(raised.value)
        with pytest.raises(EngineUnavailableError):
            store.record("a", Heartbeat(BASE), None)
    finally:
        store.close()


def test_a_full_chunk_is_kept_at_its_exact_size(valkey: ValkeyStore, engine: redis.Redis) -> None:
    first = BASE // MINUTE_NS // CHUNK_MINUTES * CHUNK_MINUTES  # a chunk's first minute
    events = [(DEVICE, Heartbeat(m * MINUTE_NS)) for m in range(first, first + CHUNK_MINUTES)]
    assert valkey.record_many(events[:-1]) == [True] * (CHUNK_MINUTES - 1)
    chunk = f"fm:{{{DEVICE}}}:c:{first // CHUNK_MINUTES}"
    assert valkey.record(DEVICE, events[-1][1], None) is True
    exact = engine.memory_usage(chunk, samples=0)  # grown a bit at a time: up to twice
    assert exact is not None and exact < 600
    assert engine.bitcount(chunk) == CHUNK_MINUTES
    assert engine.hget(f"fm:{{{DEVICE}}}:d", "full") == b"1"
    assert valkey.snapshot(DEVICE).heartbeat_minutes == CHUNK_MINUTES
    assert valkey.record(DEVICE, events[0][1], None) is False  # still a repeat
