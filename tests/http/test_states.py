"""Device states (new, up, late, down) judged on when heartbeats arrive, and clock drift, on
every store, with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.timestamps import NS_PER_SECOND, format_rfc3339, parse_rfc3339
from fleet_monitor.http.app import create_app
from fleet_monitor.store.protocol import Store
from tests.conftest import SAMPLE_DEVICES
from tests.support.api import API, assert_error, heartbeat
from tests.support.clock import Clock

START = parse_rfc3339("2024-04-02T12:00:00Z")
A, B = sorted(SAMPLE_DEVICES)[:2]


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def app(store: Store, clock: Clock) -> Flask:
    settings = Settings(expected_every=60, grace=30, max_clock_skew=10)
    return create_app(settings, store, clock=clock)


def detail(client: FlaskClient, device: str = A) -> Any:
    return client.get(f"{API}/{device}").get_json()


def test_new_up_late_down_and_up_again(client: FlaskClient, clock: Clock) -> None:
    assert detail(client)["state"] == "new"
    assert heartbeat(client, format_rfc3339(clock.now), A).status_code == 204
    received = format_rfc3339(clock.now)
    clock.advance(60)
    assert (detail(client)["state"], detail(client)["last_received_at"]) == ("up", received)
    clock.advance(1)
    assert detail(client)["state"] == "late"
    clock.advance(29)
    assert detail(client)["state"] == "late"
    clock.advance(1)
    assert detail(client)["state"] == "down"
    assert heartbeat(client, format_rfc3339(clock.now), A).status_code == 204
    assert detail(client)["state"] == "up"


def test_a_state_is_judged_on_receipt_not_on_sent_at(client: FlaskClient, clock: Clock) -> None:
    # sent an hour ago (a device that queued it): received now, so up
    assert heartbeat(client, format_rfc3339(clock.now - 3600 * NS_PER_SECOND), A).status_code == 204
    body = detail(client)
    assert (body["state"], body["status"]) == ("up", "offline")
    assert body["clock_skew_ns"] == -3600 * NS_PER_SECOND
    assert body["clock_drift"] is True


def test_clock_skew_within_the_bound_is_no_drift(client: FlaskClient, clock: Clock) -> None:
    assert heartbeat(client, format_rfc3339(clock.now + 10 * NS_PER_SECOND), A).status_code == 204
    body = detail(client)
    assert (body["clock_skew_ns"], body["clock_drift"]) == (10 * NS_PER_SECOND, False)
    clock.advance(1)
    assert heartbeat(client, format_rfc3339(clock.now - 11 * NS_PER_SECOND), A).status_code == 204
    body = detail(client)
    assert (body["clock_skew_ns"], body["clock_drift"]) == (-11 * NS_PER_SECOND, True)


def test_a_retried_key_is_not_a_new_receipt(client: FlaskClient, clock: Clock) -> None:
    sent = format_rfc3339(clock.now)
    headers = {"Idempotency-Key": "k1"}
    body = {"sent_at": sent}
    assert client.post(f"{API}/{A}/heartbeat", json=body, headers=headers).status_code == 204
    clock.advance(100)
    assert client.post(f"{API}/{A}/heartbeat", json=body, headers=headers).status_code == 204
    assert detail(client)["last_received_at"] == sent
    assert detail(client)["state"] == "down"


def test_a_batch_stamps_its_heartbeats(client: FlaskClient, clock: Clock) -> None:
    event = {"device_id": A, "type": "heartbeat", "sent_at": format_rfc3339(clock.now)}
    reply = client.post("/api/v1/events", json={"events": [event]})
    assert reply.get_json() == {"accepted": 1, "rejected": []}
    assert detail(client)["last_received_at"] == format_rfc3339(clock.now)


def test_filter_by_state_fleet_counts_and_gauges(client: FlaskClient, clock: Clock) -> None:
    assert heartbeat(client, format_rfc3339(clock.now), A).status_code == 204
    clock.advance(200)
    assert heartbeat(client, format_rfc3339(clock.now), B).status_code == 204
    assert [d["device_id"] for d in client.get(f"{API}?state=down").get_json()["devices"]] == [A]
    assert [d["device_id"] for d in client.get(f"{API}?state=up").get_json()["devices"]] == [B]
    states = client.get("/api/v1/fleet").get_json()["states"]
    assert states == {"new": len(SAMPLE_DEVICES) - 2, "up": 1, "late": 0, "down": 1, "paused": 0}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'fleet_monitor_devices_by_state{state="down"} 1.0' in metrics
    assert f'fleet_monitor_devices_by_state{{state="new"}} {len(SAMPLE_DEVICES) - 2}.0' in metrics


def test_an_unknown_state_is_a_400(client: FlaskClient) -> None:
    assert_error(
        client.get(f"{API}?state=gone"), 400, "state must be one of new, up, late, down, paused"
    )
