"""Bounds on what clients can make the service hold or compute, and what they see past them."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain import readmodels
from fleet_monitor.domain.bitmaps import CHUNK_MINUTES, PARTIAL_CHUNK_COST
from fleet_monitor.domain.errors import LimitExceededError, RateLimitedError
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.domain.idempotency import KEYS_PER_DEVICE, key_cost
from fleet_monitor.domain.limits import UPLOAD_COST, SentAtRange
from fleet_monitor.domain.timestamps import format_rfc3339, parse_rfc3339
from fleet_monitor.http import api
from fleet_monitor.http.app import create_app
from fleet_monitor.http.reads import ReadBudget
from fleet_monitor.service import new_store
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES, empty_store, observed

API = "/api/v1/devices"
MINUTE_NS = 60 * 10**9
BASE = parse_rfc3339("2024-04-02T00:00:00Z")
DEVICE_FULL = (
    "this device's history is full: it holds about {held} bytes, and at most {most} are "
    "allowed (--max-device-bytes)"
)


def client_for(settings: Settings) -> tuple[FlaskClient, MemoryStore]:
    store = new_store(settings)
    assert isinstance(store, MemoryStore)
    store.add_all(SAMPLE_DEVICES)
    return create_app(settings, store).test_client(), store


def beat(client: FlaskClient, sent_at_ns: int, device: str = DEVICE) -> Any:
    body = {"sent_at": format_rfc3339(sent_at_ns)}
    return client.post(f"{API}/{device}/heartbeat", json=body)


# --- the history budget -------------------------------------------------------------------


def test_a_device_past_its_budget_gets_a_422_and_keeps_what_it_had() -> None:
    client, store = client_for(Settings(max_device_bytes=2 * PARTIAL_CHUNK_COST))
    far = CHUNK_MINUTES * MINUTE_NS
    assert beat(client, BASE).status_code == 204
    assert beat(client, BASE + far).status_code == 204
    assert beat(client, BASE + MINUTE_NS).status_code == 204  # a chunk it has: free
    before = observed(store, DEVICE)
    response = beat(client, BASE + 2 * far)
    assert (response.status_code, response.json) == (
        422,
        {"msg": DEVICE_FULL.format(held=2 * PARTIAL_CHUNK_COST, most=2 * PARTIAL_CHUNK_COST)},
    )
    assert observed(store, DEVICE) == before
    assert beat(client, BASE + 2 * far, SAMPLE_DEVICES[1]).status_code == 204  # another device
    metrics = client.get("/metrics").text
    assert 'fleet_monitor_rejected_requests_total{reason="device_budget"} 1.0' in metrics
    assert f"fleet_monitor_history_bytes {3 * PARTIAL_CHUNK_COST}.0" in metrics


def test_random_minutes_across_millennia_stay_within_the_budget() -> None:
    """The attack of the issue: one device, heartbeats at random minutes of years 1000-9999."""
    budget = 64 * 1024
    client, store = client_for(Settings(max_device_bytes=budget))
    rng = random.Random(7)
    low, high = parse_rfc3339("1000-01-01T00:00:00Z"), parse_rfc3339("9999-01-01T00:00:00Z")
    statuses = [beat(client, rng.randrange(low, high)).status_code for _ in range(300)]
    assert statuses.count(204) == budget // PARTIAL_CHUNK_COST == 102
    assert set(statuses[102:]) == {422}
    assert store.budget.used == store.device(DEVICE).history.cost() == 102 * PARTIAL_CHUNK_COST


def test_the_fleet_budget_is_shared_and_named() -> None:
    client, store = client_for(Settings(max_fleet_bytes=2 * PARTIAL_CHUNK_COST + UPLOAD_COST))
    assert beat(client, BASE, SAMPLE_DEVICES[0]).status_code == 204
    assert beat(client, BASE, SAMPLE_DEVICES[1]).status_code == 204
    upload = {"sent_at": "2024-04-02T00:00:00Z", "upload_time": 5}
    assert client.post(f"{API}/{DEVICE}/stats", json=upload).status_code == 204
    response = client.post(f"{API}/{DEVICE}/stats", json=upload)
    assert (response.status_code, response.json) == (
        422,
        {
            "msg": f"the fleet's history is full: it holds about {store.budget.used} bytes, "
            f"and at most {store.budget.fleet} are allowed (--max-fleet-bytes)"
        },
    )
    assert store.snapshot(DEVICE).upload_count == 1
    client.delete(f"{API}/{SAMPLE_DEVICES[1]}")  # a removal gives its bytes back
    assert client.post(f"{API}/{DEVICE}/stats", json=upload).status_code == 204


# --- the fleet's size ---------------------------------------------------------------------


def test_registering_past_max_devices_is_a_422() -> None:
    client, store = client_for(Settings(max_devices=6))
    assert client.put(f"{API}/cam-06").status_code == 201
    response = client.put(f"{API}/cam-07")
    assert (response.status_code, response.json) == (
        422,
        {"msg": "the fleet holds 6 devices, the most allowed (--max-devices)"},
    )
    assert client.put(f"{API}/cam-06").status_code == 200  # already there: fine
    assert "cam-07" not in store


# --- the sent_at range --------------------------------------------------------------------


def test_sent_at_outside_the_range_is_a_422_on_every_door() -> None:
    settings = Settings(max_sent_at_age=3600, max_sent_at_lead=60)
    store = new_store(settings)
    store.add_all(SAMPLE_DEVICES)
    now = BASE + 10 * MINUTE_NS
    client = create_app(settings, store, clock=lambda: now).test_client()
    old = (
        "sent_at is 3601 s before the server's clock; at most 3600 s is accepted "
        "(--max-sent-at-age)"
    )
    ahead = (
        "sent_at is 61 s after the server's clock; at most 60 s is accepted (--max-sent-at-lead)"
    )
    cases = [(now - 3601 * 10**9, old), (now + 61 * 10**9, ahead)]
    for sent_at_ns, msg in cases:
        response = beat(client, sent_at_ns)
        assert (response.status_code, response.json) == (422, {"msg": msg})
        upload = {"sent_at": format_rfc3339(sent_at_ns), "upload_time": 5}
        response = client.post(f"{API}/{DEVICE}/stats", json=upload)
        assert (response.status_code, response.json) == (422, {"msg": msg})
        event = {"device_id": DEVICE, "type": "heartbeat", "sent_at": format_rfc3339(sent_at_ns)}
        response = client.post("/api/v1/events", data=json.dumps({"events": [event]}))
        assert response.json == {"accepted": 0, "rejected": [{"index": 0, "msg": msg}]}
    response = beat(client, now - 3600 * 10**9 - 5 * 10**8)  # half a second past: refused
    assert response.json == {
        "msg": "sent_at is 3600.5 s before the server's clock; at most 3600 s is accepted "
        "(--max-sent-at-age)"
    }
    assert beat(client, now - 3600 * 10**9).status_code == 204  # the edges are inside
    assert beat(client, now + 60 * 10**9).status_code == 204
    assert store.snapshot(DEVICE).upload_count == 0


def test_the_range_is_open_by_default() -> None:
    assert SentAtRange().is_open
    SentAtRange().check(parse_rfc3339("0001-01-01T00:00:00Z"), BASE)  # no error


# --- reads --------------------------------------------------------------------------------


def test_read_budget_refuses_at_once_past_it_and_lets_one_big_read_run_alone() -> None:
    budget = ReadBudget(30)
    with budget.spend(24):
        with pytest.raises(RateLimitedError) as raised, budget.spend(24):
            pass
        with budget.spend(6):
            pass
    assert raised.value.retry_after == 1.0
    assert str(raised.value) == (
        "too many windowed reads at once: 24 steps are being computed and at most 30 may be "
        "(--read-budget); retry shortly"
    )
    with budget.spend(10_000):  # alone: allowed whatever its size
        pass


def test_windowed_reads_past_the_read_budget_get_a_429(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = client_for(Settings(read_budget=30))
    entered, release = threading.Event(), threading.Event()

    real = readmodels.uptime_series

    def slow(*args: Any) -> Any:
        entered.set()
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(api, "uptime_series", slow)
    first = threading.Thread(target=client.get, args=(f"{API}/{DEVICE}/uptime",))
    first.start()
    assert entered.wait(10)
    response = client.get(f"{API}/{DEVICE}/uploads")  # 24 more steps than the 30 allowed
    release.set()
    first.join()
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    assert response.json is not None and response.json["msg"].startswith(
        "too many windowed reads at once: 24 steps"
    )
    assert client.get(f"{API}/{DEVICE}/uploads").status_code == 200


def test_reads_per_client_are_rate_limited() -> None:
    client, _ = client_for(Settings(read_rate_limit=1 / 3600, burst=2))
    first = {"REMOTE_ADDR": "10.0.0.1"}
    statuses = [client.get("/api/v1/fleet", environ_base=first).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    response = client.get("/api/v1/fleet", environ_base=first)
    assert response.json == {
        "msg": "too many reads from this client: at most 0.000277778 a second, 2 at once"
    }
    assert int(response.headers["Retry-After"]) > 3000
    assert client.get("/api/v1/fleet", environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code == 200
    assert beat(client, BASE).status_code == 204  # writes are not reads
    assert client.get("/healthz", environ_base=first).status_code == 200  # nor health checks


def test_limit_errors_are_invalid_input_with_their_own_status() -> None:
    error = LimitExceededError("x", "device_budget")
    assert (error.status, error.reason) == (422, "device_budget")


def test_idempotency_keys_count_in_the_device_budget(
    store_kind: str, request: pytest.FixtureRequest
) -> None:
    """Fresh keys on a minute the device has cost their bytes: they cannot grow a device's
    memory past its budget either."""
    budget = PARTIAL_CHUNK_COST + 3 * key_cost("heartbeat", "k-000")
    store = empty_store(store_kind, request, per_device_bytes=budget)
    store.add_all([DEVICE])
    assert store.record(DEVICE, Heartbeat(BASE), None) is True
    for n in range(3):
        assert store.record(DEVICE, Heartbeat(BASE), f"k-{n:03d}") is False  # the same minute
    with pytest.raises(LimitExceededError) as refused:
        store.record(DEVICE, Heartbeat(BASE), "k-003")
    assert str(refused.value) == DEVICE_FULL.format(held=budget, most=budget)
    assert store.history_bytes() == budget


def test_forgotten_keys_give_their_bytes_back(
    store_kind: str, request: pytest.FixtureRequest
) -> None:
    store = empty_store(store_kind, request)
    store.add_all([DEVICE])
    for n in range(KEYS_PER_DEVICE + 10):
        store.record(DEVICE, Heartbeat(BASE), f"k-{n:05d}")
    each = key_cost("heartbeat", "k-00000")
    assert store.history_bytes() == PARTIAL_CHUNK_COST + KEYS_PER_DEVICE * each
    assert store.record(DEVICE, Heartbeat(BASE + MINUTE_NS), "k-00000") is True  # forgotten
