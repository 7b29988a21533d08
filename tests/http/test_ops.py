"""Operability: /metrics, /readyz, request ids and the access log's shape."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from fleet_monitor.config import Settings
from fleet_monitor.domain import readmodels
from fleet_monitor.domain.history import DeviceHistory, DeviceSnapshot
from fleet_monitor.domain.timestamps import parse_rfc3339
from fleet_monitor.http.app import create_app
from fleet_monitor.http.readiness import READY, STARTING, STOPPING, Readiness
from fleet_monitor.logs import configure_logging
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES

HEARTBEAT = f"/api/v1/devices/{DEVICE}/heartbeat"
ROUTE = "/api/v1/devices/<device_id>/heartbeat"
NOW = "2024-04-02T09:10:00Z"


def samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(client: FlaskClient, name: str, **labels: str) -> float | None:
    return samples(client).get((name, tuple(sorted(labels.items()))))


def beat(client: FlaskClient, sent_at: str, device: str = DEVICE) -> int:
    url = f"/api/v1/devices/{device}/heartbeat"
    return client.post(url, data=json.dumps({"sent_at": sent_at})).status_code


# --- metrics -----------------------------------------------------------------------------


def test_heartbeat_counters_count_accepted_and_duplicate_minutes(client: FlaskClient) -> None:
    assert value(client, "fleet_monitor_heartbeats_total") == 0
    assert beat(client, "2024-04-02T09:00:00Z") == 204
    assert beat(client, "2024-04-02T09:00:59Z") == 204  # same minute
    assert beat(client, "2024-04-02T09:01:00Z") == 204
    assert client.post(HEARTBEAT, data="{}").status_code == 400  # not accepted
    assert value(client, "fleet_monitor_heartbeats_total") == 3
    assert value(client, "fleet_monitor_heartbeat_duplicates_total") == 1


def test_upload_counter(client: FlaskClient) -> None:
    body = json.dumps({"sent_at": NOW, "upload_time": 5})
    for _ in range(2):
        assert client.post(f"/api/v1/devices/{DEVICE}/stats", data=body).status_code == 204
    assert client.post(f"/api/v1/devices/{DEVICE}/stats", data="[]").status_code == 400
    assert value(client, "fleet_monitor_uploads_total") == 2


@pytest.mark.parametrize(
    "rejection",
    [
        ("POST", HEARTBEAT, "nope", {}, 400, "invalid_json"),
        ("POST", HEARTBEAT, "{}", {}, 400, "invalid_field"),
        ("POST", HEARTBEAT, "{}", {"Idempotency-Key": "a b"}, 400, "invalid_header"),
        ("GET", "/api/v1/devices?limit=0", None, {}, 400, "invalid_query"),
        ("GET", f"/api/v1/devices/{DEVICE}/uptime?step=2m", None, {}, 400, "invalid_query"),
        ("PUT", "/api/v1/devices/a%20b", None, {}, 400, "invalid_device_id"),
        ("POST", "/api/v1/devices/nope/heartbeat", "{}", {}, 404, "unknown_device"),
        ("GET", "/nowhere", None, {}, 404, "no_such_route"),
        ("PUT", HEARTBEAT, None, {}, 405, "method_not_allowed"),
        ("POST", HEARTBEAT, "x" * 70_000, {}, 413, "body_too_large"),
    ],
)
def test_rejections_are_counted_by_reason(
    client: FlaskClient, rejection: tuple[str, str, str | None, dict[str, str], int, str]
) -> None:
    method, path, body, headers, status, reason = rejection
    response = client.open(path, method=method, data=body, headers=headers)
    assert response.status_code == status
    found = samples(client)
    rejected = {
        labels: count
        for (name, labels), count in found.items()
        if name == "fleet_monitor_rejected_requests_total"
    }
    assert rejected == {(("reason", reason),): 1.0}


def test_requests_are_counted_by_route_template_method_and_status(client: FlaskClient) -> None:
    beat(client, NOW)
    beat(client, NOW)
    client.post("/api/v1/devices/other/heartbeat", data="{}")
    client.get("/nowhere/at/all")
    client.open(HEARTBEAT, method="BREW")
    found = samples(client)
    requests = {
        labels: count
        for (name, labels), count in found.items()
        if name == "fleet_monitor_http_requests_total"
    }
    assert requests == {
        (("method", "POST"), ("route", ROUTE), ("status", "204")): 2.0,
        (("method", "POST"), ("route", ROUTE), ("status", "404")): 1.0,
        (("method", "GET"), ("route", "unmatched"), ("status", "404")): 1.0,
        # no label per verb; a 405 matched no route (werkzeug routes by path and method)
        (("method", "other"), ("route", "unmatched"), ("status", "405")): 1.0,
    }
    assert found[("fleet_monitor_http_request_duration_seconds_count", (("route", ROUTE),))] == 3
    buckets = [
        labels
        for (name, labels) in found
        if name == "fleet_monitor_http_request_duration_seconds_bucket"
    ]
    assert (("le", "0.0005"), ("route", ROUTE)) in buckets


def test_fleet_gauges_are_computed_at_scrape_time() -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    client = create_app(Settings(), store, clock=lambda: parse_rfc3339(NOW)).test_client()
    beat(client, "2024-04-02T09:09:00Z", SAMPLE_DEVICES[0])  # online
    beat(client, "2024-04-02T09:00:00Z", SAMPLE_DEVICES[1])  # offline (10 min old)
    beat(client, "2024-04-02T09:05:00Z", SAMPLE_DEVICES[1])  # still offline: 5 min old
    found = samples(client)
    assert found[("fleet_monitor_devices_registered", ())] == 5
    assert found[("fleet_monitor_devices_online", ())] == 1
    assert found[("fleet_monitor_devices_offline", ())] == 1
    assert found[("fleet_monitor_devices_never_seen", ())] == 3
    assert found[("fleet_monitor_fleet_avg_uptime_percent", ())] == 70.0  # (100 + 40) / 2
    store.register("cam-07")  # no bookkeeping: the next scrape sees it
    assert value(client, "fleet_monitor_devices_never_seen") == 4
    assert not any(name.startswith("fleet_monitor_device_") for name, _ in found)


def test_per_device_series_only_when_asked() -> None:
    client = create_app(
        Settings(metrics_per_device=True),
        MemoryStore(SAMPLE_DEVICES[:2]),
        clock=lambda: parse_rfc3339(NOW),
    ).test_client()
    beat(client, "2024-04-02T09:00:00Z")
    beat(client, "2024-04-02T09:04:30Z")
    found = samples(client)
    device = (("device_id", DEVICE),)
    other = (("device_id", SAMPLE_DEVICES[1]),)
    assert found[("fleet_monitor_device_uptime_percent", device)] == 50.0  # 2 minutes over 4
    assert found[("fleet_monitor_device_uptime_percent", other)] == 0.0
    assert found[("fleet_monitor_device_last_heartbeat_timestamp_seconds", device)] == 1712048670.0
    assert ("fleet_monitor_device_last_heartbeat_timestamp_seconds", other) not in found


def test_process_metrics_come_from_the_library(client: FlaskClient) -> None:
    names = {name for name, _ in samples(client)}
    assert {"process_cpu_seconds_total", "python_info", "python_gc_objects_collected_total"} <= (
        names
    )
    assert not any(name.endswith("_created") for name in names)


def test_two_apps_keep_separate_counts() -> None:
    first = create_app(Settings(), MemoryStore(SAMPLE_DEVICES)).test_client()
    second = create_app(Settings(), MemoryStore(SAMPLE_DEVICES)).test_client()
    beat(first, NOW)
    assert value(first, "fleet_monitor_heartbeats_total") == 1
    assert value(second, "fleet_monitor_heartbeats_total") == 0


def test_a_scrape_never_holds_the_fleet_lock_while_reading_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Half-way through a scrape, another thread registers a device (which takes the fleet
    lock); were the scrape holding that lock, the thread would not finish."""
    store = MemoryStore(f"dev-{n}" for n in range(1000))
    client = create_app(Settings(), store).test_client()
    real_snapshot = DeviceHistory.snapshot
    seen = 0
    finished: list[bool] = []

    def snapshot(history: DeviceHistory, device_id: str) -> DeviceSnapshot:
        nonlocal seen
        seen += 1
        if seen == 500:
            writer = threading.Thread(target=store.register, args=("cam-07",))
            writer.start()
            writer.join(timeout=5)
            finished.append(not writer.is_alive())
        return real_snapshot(history, device_id)

    monkeypatch.setattr(DeviceHistory, "snapshot", snapshot)
    assert client.get("/metrics").status_code == 200
    assert finished == [True]
    assert "cam-07" in store


# --- readiness ---------------------------------------------------------------------------


def test_readiness_life_cycle() -> None:
    readiness = Readiness()
    assert (readiness.state, readiness.is_ready, readiness.is_loaded) == (STARTING, False, False)
    readiness.set_ready()
    assert (readiness.state, readiness.is_ready, readiness.is_loaded) == (READY, True, True)
    assert readiness.begin_stop() is True
    assert readiness.begin_stop() is False  # a second signal
    assert (readiness.state, readiness.is_ready, readiness.is_loaded) == (STOPPING, False, True)


def test_a_stop_during_loading_is_not_undone_by_the_load_finishing() -> None:
    readiness = Readiness()
    readiness.begin_stop()
    readiness.set_ready()
    assert (readiness.state, readiness.is_loaded) == (STOPPING, True)


def test_readyz_and_the_api_follow_the_life_cycle() -> None:
    readiness = Readiness()
    client = create_app(Settings(), MemoryStore(SAMPLE_DEVICES), readiness=readiness).test_client()
    response = client.get("/readyz")
    assert (response.status_code, response.json) == (503, {"status": "starting", "ready": False})
    assert response.headers["Retry-After"] == "1"
    response = client.post(HEARTBEAT, data=json.dumps({"sent_at": NOW}))
    assert (response.status_code, response.json) == (
        503,
        {"msg": "the service is starting: the fleet is not loaded yet"},
    )
    assert response.headers["Retry-After"] == "1"
    assert client.get("/healthz").status_code == 200  # alive all along
    assert client.get("/metrics").status_code == 200
    assert value(client, "fleet_monitor_rejected_requests_total", reason="not_ready") == 1

    readiness.set_ready()
    response = client.get("/readyz")
    assert (response.status_code, response.json) == (200, {"status": "ready", "ready": True})
    assert "Retry-After" not in response.headers
    assert beat(client, NOW) == 204

    readiness.begin_stop()
    response = client.get("/readyz")
    assert (response.status_code, response.json) == (503, {"status": "stopping", "ready": False})
    assert beat(client, NOW) == 204  # still served while draining


# --- request ids and the access log -------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(logging.INFO, "json", stream)
    yield stream
    configure_logging(logging.WARNING, "text")


def access_lines(stream: io.StringIO) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "fleet_monitor.access"]


def test_a_sane_request_id_is_echoed_and_logged(
    client: FlaskClient, log_stream: io.StringIO
) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "lb-1234:abc/DEF+=_.@-"})
    assert response.headers["X-Request-ID"] == "lb-1234:abc/DEF+=_.@-"
    [line] = access_lines(log_stream)
    assert line["request_id"] == "lb-1234:abc/DEF+=_.@-"


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, 'quote"d', "naïve"])
def test_an_absent_or_insane_request_id_is_replaced(client: FlaskClient, given: str | None) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    first = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    second = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    assert re.fullmatch("[0-9a-f]{32}", first)
    assert first != second


def test_error_and_204_replies_carry_the_request_id(client: FlaskClient) -> None:
    assert "X-Request-ID" in client.post(HEARTBEAT, data="x").headers
    assert "X-Request-ID" in client.post(HEARTBEAT, data=json.dumps({"sent_at": NOW})).headers


def test_json_access_line_has_every_field_and_no_body(
    client: FlaskClient, log_stream: io.StringIO
) -> None:
    secret = "s3cr3t-body-value"
    client.post(
        HEARTBEAT + "?x=1",
        data=json.dumps({"sent_at": NOW, "note": secret}),
        headers={"X-Request-ID": "r-1", "Authorization": "Bearer tok-secret"},
    )
    [line] = access_lines(log_stream)
    assert list(line) == [
        "time",
        "level",
        "logger",
        "msg",
        "pid",
        "method",
        "path",
        "query",
        "route",
        "status",
        "duration_ms",
        "remote_addr",
        "request_id",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))
    assert (line["level"], line["method"], line["path"], line["query"]) == (
        "info",
        "POST",
        HEARTBEAT,
        "x=1",
    )
    assert (line["route"], line["status"], line["request_id"]) == (ROUTE, 204, "r-1")
    assert line["remote_addr"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)
    assert line["msg"] == f'127.0.0.1 "POST {HEARTBEAT}?x=1" 204 {line["duration_ms"]:.2f}ms id=r-1'
    assert secret not in log_stream.getvalue()
    assert "tok-secret" not in log_stream.getvalue()


def test_an_unmatched_route_logs_route_null(client: FlaskClient, log_stream: io.StringIO) -> None:
    client.get("/nowhere")
    [line] = access_lines(log_stream)
    assert (line["route"], line["status"], line["query"]) == (None, 404, None)


def test_text_access_line_shape(client: FlaskClient) -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, "text", stream)
    try:
        client.get("/healthz", headers={"X-Request-ID": "r-2"})
    finally:
        configure_logging(logging.WARNING, "text")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO fleet_monitor\.access: "
        r'127\.0\.0\.1 "GET /healthz" 200 \d+\.\d\dms id=r-2\n',
        stream.getvalue(),
    )


@pytest.mark.parametrize(
    ("query", "logged"),
    [
        ("access_token=s3cr3t", "access_token=REDACTED"),
        ("limit=5&api_key=s3cr3t&x=1", "limit=5&api_key=REDACTED&x=1"),
        ("Token=s3cr3t&token=s3cr3t", "Token=REDACTED&token=REDACTED"),
        ("access%5Ftoken=s3cr3t", "access%5Ftoken=REDACTED"),
        (
            "password=s3cr3t&sig=s3cr3t&session=s3cr3t",
            "password=REDACTED&sig=REDACTED&session=REDACTED",
        ),
        ("s3cr3t", "s3cr3t"),  # a bare value names no credential: kept as sent
        ("limit=5", "limit=5"),
    ],
)
def test_credentials_in_the_query_are_redacted_from_the_log(
    client: FlaskClient, log_stream: io.StringIO, query: str, logged: str
) -> None:
    client.get(f"/api/v1/devices?{query}")
    [line] = access_lines(log_stream)
    assert line["query"] == logged
    assert str(line["msg"]).startswith(f'127.0.0.1 "GET /api/v1/devices?{logged}" ')
    if "=" in query:
        assert "s3cr3t" not in log_stream.getvalue()


def test_concurrent_summaries_share_one_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients asking for /fleet (or /metrics) while a summary is being computed wait for it
    and share its result: the service spends one thread on it, however many ask."""
    store = MemoryStore(SAMPLE_DEVICES)
    client = create_app(Settings(), store).test_client()
    started, release, computed = threading.Event(), threading.Event(), []
    real = readmodels.fleet_summary

    def slow_summary(*args: Any, **options: Any) -> Any:
        computed.append(1)
        started.set()
        release.wait(10)
        return real(*args, **options)

    monkeypatch.setattr(readmodels, "fleet_summary", slow_summary)
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(client.get("/api/v1/fleet").json))
    first.start()
    assert started.wait(10)
    others = [
        threading.Thread(target=lambda: answers.append(client.get("/api/v1/fleet").json))
        for _ in range(3)
    ]
    for thread in others:
        thread.start()
    time.sleep(0.1)  # let them find the computation running
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert len(computed) == 1
    assert len(answers) == 4 and all(answer == answers[0] for answer in answers)
