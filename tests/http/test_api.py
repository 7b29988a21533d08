"""The device API through Flask's test client: every row and every error of the SPEC."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, observed
from tests.support.api import API, assert_error, heartbeat, post

MAX_NS = 9_223_372_036_854_775_807
SENT_AT_FORM = 'an RFC 3339 date-time with an offset, e.g. "2024-03-01T12:00:00Z"'
UPLOAD_FORM = f"an integer number of nanoseconds from 0 to {MAX_NS}"
BOM_MSG = "request body must be JSON in UTF-8, without a byte-order mark"


def upload(client: FlaskClient, upload_time: Any, device: str = DEVICE) -> TestResponse:
    return post(
        client,
        f"{API}/{device}/stats",
        {"sent_at": "0001-01-01T00:00:00Z", "upload_time": upload_time},
    )


def stats(client: FlaskClient, device: str = DEVICE) -> dict[str, Any]:
    response = client.get(f"{API}/{device}/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.get_json()
    return result


# --- success rows -------------------------------------------------------------------------


def test_heartbeat_is_204_with_empty_body(client: FlaskClient) -> None:
    response = heartbeat(client, "2024-04-02T09:00:00Z")
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers


def test_upload_is_204_with_empty_body(client: FlaskClient) -> None:
    response = upload(client, 1_000)
    assert response.status_code == 204
    assert response.data == b""


def test_fresh_device_stats_exact_bytes(client: FlaskClient) -> None:
    response = client.get(f"{API}/{DEVICE}/stats")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.data == b'{"uptime":0.0,"avg_upload_time":"0s"}\n'


def test_stats_exact_bytes_with_micro_sign(client: FlaskClient) -> None:
    heartbeat(client, "2024-04-02T09:00:00Z")
    upload(client, 1_000)
    upload(client, 2_000)
    response = client.get(f"{API}/{DEVICE}/stats")
    assert response.data == '{"uptime":100.0,"avg_upload_time":"1.5µs"}\n'.encode()


def test_reference_uptime_and_truncated_average(client: FlaskClient) -> None:
    missing = {*range(10, 44), 200}  # minutes 0..480, 35 missing: 446 seen over a span of 480
    for minute in range(481):
        if minute not in missing:
            hour, rest = divmod(minute, 60)
            assert heartbeat(client, f"2024-04-02T{9 + hour:02d}:{rest:02d}:00Z").status_code == 204
    for upload_time in (187_893_379_134, 187_893_379_135, 187_893_379_134):
        upload(client, upload_time)
    assert stats(client) == {"uptime": 92.91666666666667, "avg_upload_time": "3m7.893379134s"}


def test_offsets_convert_to_utc_before_bucketing(client: FlaskClient, store: MemoryStore) -> None:
    heartbeat(client, "2024-04-02T09:00:00Z")
    heartbeat(client, "2024-04-02T11:00:59.999999999+02:00")  # same UTC minute
    heartbeat(client, "2024-04-02T04:01:00-05:00")  # 09:01Z
    assert store.snapshot(DEVICE).heartbeat_minutes == 2


def test_nine_fractional_digits_and_zero_time(client: FlaskClient) -> None:
    assert heartbeat(client, "2024-03-01T12:00:00.123456789Z").status_code == 204
    assert heartbeat(client, "0001-01-01T00:00:00Z").status_code == 204
    assert heartbeat(client, "9999-12-31T23:59:59.999999999Z").status_code == 204


def test_upload_time_bounds_accepted(client: FlaskClient) -> None:
    assert upload(client, 0).status_code == 204
    assert upload(client, MAX_NS).status_code == 204
    assert stats(client)["avg_upload_time"] == "1281023h53m38.427387903s"


def test_body_is_json_whatever_the_content_type(client: FlaskClient) -> None:
    body = '{"sent_at": "2024-04-02T09:00:00Z"}'
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        response = client.post(f"{API}/{DEVICE}/heartbeat", data=body, content_type=content_type)
        assert response.status_code == 204


def test_unknown_fields_are_ignored(client: FlaskClient) -> None:
    response = post(
        client,
        f"{API}/{DEVICE}/stats",
        {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 5, "extra": [1, {"x": None}]},
    )
    assert response.status_code == 204
    assert stats(client)["avg_upload_time"] == "5ns"


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "devices": 5}


# --- unknown device: 404 before the body is looked at ------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("POST", "heartbeat", "not json at all"),
        ("POST", "stats", '{"upload_time": -1}'),
        ("GET", "stats", None),
    ],
)
def test_unknown_device_is_404_before_the_body(
    client: FlaskClient, method: str, suffix: str, body: str | None
) -> None:
    response = client.open(f"{API}/00-00-00-00-00-00/{suffix}", method=method, data=body)
    assert_error(response, 404, "device not found")


def test_unknown_device_with_oversized_body_is_404(client: FlaskClient) -> None:
    response = client.post(f"{API}/nope/heartbeat", data=b" " * 100_000)
    assert_error(response, 404, "device not found")


# --- bad bodies: 400 naming the problem, nothing stored ----------------------------------

BAD_HEARTBEATS = [
    ("", "request body is not valid JSON"),
    ("{", "request body is not valid JSON"),
    ("sent_at=2024-04-02T09:00:00Z", "request body is not valid JSON"),
    ('{"sent_at": NaN}', "request body is not valid JSON"),
    (b'{"sent_at": "\xff"}', "request body is not valid JSON"),
    ("[" * 30_000 + "]" * 30_000, "request body is not valid JSON"),
    ("[]", "request body must be a JSON object"),
    ('"2024-04-02T09:00:00Z"', "request body must be a JSON object"),
    ("null", "request body must be a JSON object"),
    ("42", "request body must be a JSON object"),
    ("{}", f"sent_at is required: {SENT_AT_FORM}"),
    ('{"sent_at": null}', f"sent_at must be a string: {SENT_AT_FORM}"),
    ('{"sent_at": 1712048400}', f"sent_at must be a string: {SENT_AT_FORM}"),
    ('{"sent_at": ["2024-04-02T09:00:00Z"]}', f"sent_at must be a string: {SENT_AT_FORM}"),
    ('{"sent_at": "2024-04-02T09:00:00"}', f"sent_at is not {SENT_AT_FORM}"),
    ('{"sent_at": "2024-04-02 09:00:00Z"}', f"sent_at is not {SENT_AT_FORM}"),
    ('{"sent_at": "yesterday"}', f"sent_at is not {SENT_AT_FORM}"),
    ('{"sent_at": "2024-04-02T09:00:00.1234567890Z"}', f"sent_at is not {SENT_AT_FORM}"),
    (
        '{"sent_at": "2023-02-29T09:00:00Z"}',
        f"sent_at has no such date: {SENT_AT_FORM} is expected",
    ),
    (
        '{"sent_at": "2024-04-02T25:00:00Z"}',
        f"sent_at has no such time of day: {SENT_AT_FORM} is expected",
    ),
    (
        '{"sent_at": "0001-01-01T00:00:00+01:00"}',
        "sent_at is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z once in UTC",
    ),
]


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (b'\xef\xbb\xbf{"sent_at": "2024-04-02T09:00:00Z"}', BOM_MSG),
        ('{"sent_at": "2024-04-02T09:00:00Z"}'.encode("utf-16"), "request body is not valid JSON"),
        (
            '{"sent_at": "2024-04-02T09:00:00Z"}'.encode("utf-16-le"),
            "request body is not valid JSON",
        ),
        ('{"sent_at": "2024-04-02T09:00:00Z"}'.encode("utf-32"), "request body is not valid JSON"),
    ],
    ids=["utf-8-bom", "utf-16", "utf-16-le-no-bom", "utf-32"],
)
def test_only_utf8_json_is_accepted(
    client: FlaskClient, store: MemoryStore, body: bytes, msg: str
) -> None:
    for path in (f"{API}/{DEVICE}/heartbeat", f"{API}/{DEVICE}/stats"):
        assert_error(post(client, path, body), 400, msg)
    assert store.snapshot(DEVICE).last_heartbeat_ns is None
    assert store.snapshot(DEVICE).upload_count == 0


@pytest.mark.parametrize(("body", "msg"), BAD_HEARTBEATS)
def test_bad_heartbeat(
    client: FlaskClient, store: MemoryStore, body: str | bytes, msg: str
) -> None:
    heartbeat(client, "2024-04-02T09:00:00Z")
    assert_error(client.post(f"{API}/{DEVICE}/heartbeat", data=body), 400, msg)
    assert store.snapshot(DEVICE).heartbeat_minutes == 1


BAD_UPLOADS = [
    ('{"upload_time": 5}', f"sent_at is required: {SENT_AT_FORM}"),
    ('{"sent_at": "2024-04-02T09:00:00Z"}', f"upload_time is required: {UPLOAD_FORM}"),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": 1.0}',
        f"upload_time must be {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": 1e3}',
        f"upload_time must be {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": true}',
        f"upload_time must be {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": "5"}',
        f"upload_time must be {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": null}',
        f"upload_time must be {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": -1}',
        f"upload_time is out of range: {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": 9223372036854775808}',
        f"upload_time is out of range: {UPLOAD_FORM}",
    ),
    (
        '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": ' + "9" * 5000 + "}",
        f"upload_time is out of range: {UPLOAD_FORM}",
    ),
    ('{"sent_at": "2024-04-02T09:00:00", "upload_time": 5}', f"sent_at is not {SENT_AT_FORM}"),
]


@pytest.mark.parametrize(("body", "msg"), BAD_UPLOADS)
def test_bad_upload(client: FlaskClient, store: MemoryStore, body: str, msg: str) -> None:
    upload(client, 10)
    assert_error(client.post(f"{API}/{DEVICE}/stats", data=body), 400, msg)
    snapshot = store.snapshot(DEVICE)
    assert (snapshot.upload_count, snapshot.upload_sum_ns) == (1, 10)


# --- protocol errors ----------------------------------------------------------------------


def test_wrong_method_is_405_json_with_allow(client: FlaskClient) -> None:
    response = client.delete(f"{API}/{DEVICE}/heartbeat")
    assert_error(response, 405, "method DELETE is not allowed here; allowed: OPTIONS, POST")
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_get_on_heartbeat_is_405(client: FlaskClient) -> None:
    response = client.get(f"{API}/{DEVICE}/heartbeat")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/status",
        "/api/v1",
        "/api/v2/devices",
        f"{API}/{DEVICE}/stats/",
        f"{API}/{DEVICE}/x",
        "/api/v1//fleet",  # no redirect (werkzeug would answer 308 with an HTML page)
        f"{API}//{DEVICE}/stats",
    ],
)
def test_unknown_path_is_404_json(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404, f"no such endpoint: {path}")


def test_body_over_limit_is_413_json(client: FlaskClient, store: MemoryStore) -> None:
    body = json.dumps({"sent_at": "2024-04-02T09:00:00Z", "pad": "x" * 70_000})
    response = client.post(f"{API}/{DEVICE}/heartbeat", data=body)
    assert_error(response, 413, "request body is larger than 65536 bytes")
    assert store.snapshot(DEVICE).heartbeat_minutes == 0


def test_body_at_limit_is_accepted(client: FlaskClient) -> None:
    prefix = '{"sent_at": "2024-04-02T09:00:00Z", "pad": "'
    body = prefix + "x" * (65536 - len(prefix) - 2) + '"}'
    assert len(body) == 65536
    assert client.post(f"{API}/{DEVICE}/heartbeat", data=body).status_code == 204


def test_unexpected_failure_is_500_without_traceback(
    client: FlaskClient,
    store: MemoryStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(device_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "snapshot", explode)
    with caplog.at_level(logging.ERROR):
        response = client.get(f"{API}/{DEVICE}/stats")
    assert_error(response, 500, "internal server error")
    assert b"secret" not in response.data
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None
    assert "secret internals" in str(record.exc_info[1])


# --- Idempotency-Key ----------------------------------------------------------------------


def test_repeated_idempotency_key_is_counted_once(client: FlaskClient, store: MemoryStore) -> None:
    body = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 7}
    for _ in range(3):
        response = client.post(
            f"{API}/{DEVICE}/stats", json=body, headers={"Idempotency-Key": "k1"}
        )
        assert (response.status_code, response.data) == (204, b"")
    client.post(f"{API}/{DEVICE}/stats", json=body, headers={"Idempotency-Key": "k2"})
    client.post(f"{API}/{DEVICE}/stats", json=body)  # no key: counted as before
    client.post(f"{API}/{DEVICE}/stats", json=body)
    assert store.snapshot(DEVICE).upload_count == 4


def test_idempotency_keys_are_per_device(client: FlaskClient, store: MemoryStore) -> None:
    body = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 7}
    other = "b4-45-52-a2-f1-3c"
    for device in (DEVICE, other):
        client.post(f"{API}/{device}/stats", json=body, headers={"Idempotency-Key": "same"})
    assert store.snapshot(DEVICE).upload_count == store.snapshot(other).upload_count == 1


def test_a_rejected_request_does_not_use_up_its_key(
    client: FlaskClient, store: MemoryStore
) -> None:
    headers = {"Idempotency-Key": "k"}
    bad = client.post(
        f"{API}/{DEVICE}/stats", json={"sent_at": "x", "upload_time": 1}, headers=headers
    )
    assert bad.status_code == 400
    good = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 1}
    assert client.post(f"{API}/{DEVICE}/stats", json=good, headers=headers).status_code == 204
    assert store.snapshot(DEVICE).upload_count == 1


def test_only_the_last_1024_keys_are_remembered(client: FlaskClient, store: MemoryStore) -> None:
    body = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 1}
    for n in range(1025):
        client.post(f"{API}/{DEVICE}/stats", json=body, headers={"Idempotency-Key": f"k{n}"})
    client.post(f"{API}/{DEVICE}/stats", json=body, headers={"Idempotency-Key": "k1024"})  # kept
    client.post(f"{API}/{DEVICE}/stats", json=body, headers={"Idempotency-Key": "k0"})  # evicted
    assert store.snapshot(DEVICE).upload_count == 1026


def test_heartbeat_accepts_a_key(client: FlaskClient, store: MemoryStore) -> None:
    headers = {"Idempotency-Key": "hb-1"}
    for sent_at in ("2024-04-02T09:00:00Z", "2024-04-02T11:00:00+02:00"):  # the same instant
        response = client.post(
            f"{API}/{DEVICE}/heartbeat", json={"sent_at": sent_at}, headers=headers
        )
        assert response.status_code == 204
    assert store.snapshot(DEVICE).heartbeat_minutes == 1


CONFLICT = (
    "Idempotency-Key k was already used for a different {kind} of this device; "
    "send each new {kind} with a new key"
)


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        (
            "heartbeat",
            {"sent_at": "2024-04-02T09:00:00Z"},
            {"sent_at": "2024-04-02T09:05:00Z"},
        ),
        (
            "stats",
            {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 7},
            {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 8},
        ),
        (
            "stats",
            {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 7},
            {"sent_at": "2024-04-02T09:00:01Z", "upload_time": 7},
        ),
    ],
)
def test_a_key_reused_for_a_different_event_is_a_409(
    client: FlaskClient,
    store: MemoryStore,
    path: str,
    first: dict[str, Any],
    second: dict[str, Any],
) -> None:
    kind = {"heartbeat": "heartbeat", "stats": "upload"}[path]
    headers = {"Idempotency-Key": "k"}
    url = f"{API}/{DEVICE}/{path}"
    assert client.post(url, json=first, headers=headers).status_code == 204
    before = observed(store, DEVICE)
    assert_error(client.post(url, json=second, headers=headers), 409, CONFLICT.format(kind=kind))
    assert observed(store, DEVICE) == before  # nothing stored or changed
    assert client.post(url, json=first, headers=headers).status_code == 204  # a true retry
    assert observed(store, DEVICE) == before
    rejected = client.get("/metrics").text
    assert 'fleet_monitor_rejected_requests_total{reason="idempotency_conflict"} 1.0' in rejected


def test_keys_are_scoped_per_endpoint(client: FlaskClient, store: MemoryStore) -> None:
    headers = {"Idempotency-Key": "k"}
    upload = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 7}
    beat = {"sent_at": "2024-04-02T09:00:00Z"}
    assert client.post(f"{API}/{DEVICE}/stats", json=upload, headers=headers).status_code == 204
    assert client.post(f"{API}/{DEVICE}/heartbeat", json=beat, headers=headers).status_code == 204
    snapshot = store.snapshot(DEVICE)
    assert (snapshot.upload_count, snapshot.heartbeat_minutes) == (1, 1)  # both stored


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "é"])
def test_bad_idempotency_key(client: FlaskClient, store: MemoryStore, key: str) -> None:
    body = {"sent_at": "2024-04-02T09:00:00Z", "upload_time": 1}
    response = client.post(f"{API}/{DEVICE}/stats", json=body, headers={"Idempotency-Key": key})
    assert_error(response, 400, "Idempotency-Key must be 1 to 255 visible ASCII characters")
    assert store.snapshot(DEVICE).upload_count == 0
