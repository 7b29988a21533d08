"""Batch ingestion, bearer tokens and the per-device rate limit."""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from fleet_monitor.config import Settings, parse_rate
from fleet_monitor.domain import events
from fleet_monitor.http.app import create_app
from fleet_monitor.http.guard import Access, RateLimiter
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import JournalError, read_segment, segments
from fleet_monitor.store.memory import MemoryStore
from fleet_monitor.store.protocol import Store
from tests.conftest import DEVICE, SAMPLE_DEVICES

AT = "2024-04-02T09:00:00Z"
HEARTBEAT = f"/api/v1/devices/{DEVICE}/heartbeat"


def batch(client: FlaskClient, events: list[Any]) -> Any:
    return client.post("/api/v1/events", data=json.dumps({"events": events}))


# --- batches ---------------------------------------------------------------------------


def test_a_mixed_batch_applies_the_valid_and_reports_the_rest(tmp_path: Path) -> None:
    store = MemoryStore()
    durable = DurableStore(tmp_path, "no", 0)
    durable.open(store, SAMPLE_DEVICES)
    client = create_app(Settings(), store).test_client()
    other = SAMPLE_DEVICES[1]
    response = batch(
        client,
        [
            {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT},
            {"device_id": DEVICE, "type": "upload", "sent_at": AT, "upload_time": 7},
            {"device_id": "nope", "type": "heartbeat", "sent_at": AT},
            {"device_id": DEVICE, "type": "heartbeat"},
            {"device_id": DEVICE, "type": "upload", "sent_at": AT, "upload_time": 1.5},
            {"device_id": DEVICE, "type": "reboot", "sent_at": AT},
            {"type": "heartbeat", "sent_at": AT},
            "not an event",
            {"device_id": other, "type": "heartbeat", "sent_at": "2024-04-02T11:05:00+02:00"},
        ],
    )
    assert response.status_code == 200
    assert response.json == {
        "accepted": 3,
        "rejected": [
            {"index": 2, "msg": "device not found"},
            {
                "index": 3,
                "msg": "sent_at is required: an RFC 3339 date-time with an offset, "
                'e.g. "2024-03-01T12:00:00Z"',
            },
            {
                "index": 4,
                "msg": "upload_time must be an integer number of nanoseconds "
                "from 0 to 9223372036854775807",
            },
            {"index": 5, "msg": "type must be heartbeat or upload"},
            {"index": 6, "msg": "device_id is required: a string"},
            {"index": 7, "msg": "an event must be a JSON object"},
        ],
    }
    assert client.get(f"/api/v1/devices/{DEVICE}/stats").json == {
        "uptime": 100.0,
        "avg_upload_time": "7ns",
    }
    assert store.snapshot(other).last_heartbeat_ns is not None
    [path] = segments(tmp_path)
    journaled = [(e.kind, e.device_id) for e in read_segment(path, last=True, repair=False)]
    assert journaled == [("h", DEVICE), ("u", DEVICE), ("h", other)]  # exactly the accepted


def test_a_mixed_batch_reads_the_same_on_every_store(client: FlaskClient, store: Store) -> None:
    """One pipeline on Valkey, one loop in memory: the same answer, the same state."""
    other = SAMPLE_DEVICES[1]
    response = batch(
        client,
        [
            {"device_id": "nope", "type": "reboot"},
            {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT},
            {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT},
            {"device_id": "nope", "type": "heartbeat", "sent_at": AT},
            {"device_id": other, "type": "upload", "sent_at": AT, "upload_time": 2**63 - 1},
            {"device_id": other, "type": "upload", "sent_at": AT, "upload_time": 1},
        ],
    )
    assert (response.status_code, response.json) == (
        200,
        {
            "accepted": 4,
            "rejected": [
                {"index": 0, "msg": "device not found"},
                {"index": 3, "msg": "device not found"},
            ],
        },
    )
    assert store.snapshot(DEVICE).heartbeat_minutes == 1
    assert store.snapshot(other).upload_sum_ns == 2**63
    text = client.get("/metrics").get_data(as_text=True)
    assert "fleet_monitor_heartbeat_duplicates_total 1.0" in text


SENT_AT_TEXT = 'an RFC 3339 date-time with an offset, e.g. "2024-03-01T12:00:00Z"'
UPLOAD_TEXT = "an integer number of nanoseconds from 0 to 9223372036854775807"


@pytest.mark.parametrize(
    ("weird", "msg"),
    [
        ({"type": ["heartbeat"]}, "type must be heartbeat or upload"),
        ({"type": {"heartbeat": 1}}, "type must be heartbeat or upload"),
        ({"type": None}, "type must be heartbeat or upload"),
        ({"type": 1}, "type must be heartbeat or upload"),
        ({"device_id": ["x"]}, "device_id is required: a string"),
        ({"device_id": {"a": 1}}, "device_id is required: a string"),
        ({"sent_at": ["2024-04-02T09:00:00Z"]}, f"sent_at must be a string: {SENT_AT_TEXT}"),
        ({"type": "upload", "upload_time": {"n": 1}}, f"upload_time must be {UPLOAD_TEXT}"),
        ({"type": "upload", "upload_time": [1]}, f"upload_time must be {UPLOAD_TEXT}"),
    ],
)
def test_a_strange_event_is_reported_and_never_a_500(
    client: FlaskClient, weird: dict[str, Any], msg: str
) -> None:
    upload = {"device_id": DEVICE, "type": "upload", "sent_at": AT, "upload_time": 7}
    strange = {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT, **weird}
    response = batch(client, [upload, strange])
    assert (response.status_code, response.json) == (
        200,
        {"accepted": 1, "rejected": [{"index": 1, "msg": msg}]},
    )
    detail = client.get(f"/api/v1/devices/{DEVICE}").json
    assert detail is not None and detail["upload_count"] == 1


def test_every_event_is_validated_before_any_is_recorded(
    client: FlaskClient, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a batch whose validation fails unexpectedly part-way stores nothing, so a client
    that retries on the 500 never counts an event twice."""

    def broken(fields: dict[str, Any], received_ns: int | None) -> None:
        raise RuntimeError("a bug in validation")

    monkeypatch.setitem(events.PARSERS, "heartbeat", broken)
    upload = {"device_id": DEVICE, "type": "upload", "sent_at": AT, "upload_time": 7}
    heartbeat = {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT}
    assert batch(client, [upload, heartbeat]).status_code == 500
    assert store.snapshot(DEVICE).upload_count == 0


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ("[]", "request body must be a JSON object"),
        ("{}", "events must be a list of 1 to 1000 events"),
        ('{"events": []}', "events must be a list of 1 to 1000 events"),
        ('{"events": {"a": 1}}', "events must be a list of 1 to 1000 events"),
        ("nope", "request body is not valid JSON"),
    ],
)
def test_a_malformed_batch_is_a_400(client: FlaskClient, body: str, msg: str) -> None:
    response = client.post("/api/v1/events", data=body)
    assert (response.status_code, response.json) == (400, {"msg": msg})


def test_over_the_batch_limit_is_a_413_and_changes_nothing(store: Store) -> None:
    client = create_app(Settings(max_batch=3), store).test_client()
    events = [{"device_id": DEVICE, "type": "heartbeat", "sent_at": AT}] * 4
    response = batch(client, events)
    assert (response.status_code, response.json) == (
        413,
        {"msg": "a batch holds at most 3 events; this one has 4"},
    )
    assert store.snapshot(DEVICE).last_heartbeat_ns is None
    assert batch(client, events[:3]).json == {"accepted": 3, "rejected": []}


def test_a_full_batch_of_1000_fits_its_body_limit(client: FlaskClient) -> None:
    events = [
        {"device_id": DEVICE, "type": "upload", "sent_at": AT, "upload_time": 10**18 + n}
        for n in range(1000)
    ]
    response = batch(client, events)
    assert response.json == {"accepted": 1000, "rejected": []}
    detail = client.get(f"/api/v1/devices/{DEVICE}").json
    assert detail is not None and detail["upload_count"] == 1000


def test_batch_events_are_counted_in_the_metrics(client: FlaskClient) -> None:
    batch(
        client,
        [
            {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT},
            {"device_id": DEVICE, "type": "heartbeat", "sent_at": AT},
            {"device_id": DEVICE, "type": "upload", "sent_at": AT, "upload_time": 1},
        ],
    )
    text = client.get("/metrics").get_data(as_text=True)
    assert "fleet_monitor_heartbeats_total 2.0" in text
    assert "fleet_monitor_heartbeat_duplicates_total 1.0" in text
    assert "fleet_monitor_uploads_total 1.0" in text


# --- tokens ------------------------------------------------------------------------------

TOKENS = Settings(read_token="r-tok", device_token="d-tok", admin_token="a-tok")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path", "body", "role"),
    [
        ("POST", HEARTBEAT, json.dumps({"sent_at": AT}), "device"),
        (
            "POST",
            f"/api/v1/devices/{DEVICE}/stats",
            json.dumps({"sent_at": AT, "upload_time": 1}),
            "device",
        ),
        (
            "POST",
            "/api/v1/events",
            json.dumps({"events": [{"device_id": DEVICE, "type": "heartbeat", "sent_at": AT}]}),
            "device",
        ),
        ("PUT", "/api/v1/devices/cam-07", None, "admin"),
        ("DELETE", f"/api/v1/devices/{DEVICE}", None, "admin"),
        ("GET", f"/api/v1/devices/{DEVICE}/stats", None, "read"),
        ("GET", "/api/v1/fleet", None, "read"),
    ],
)
def test_each_role_needs_its_token(method: str, path: str, body: str | None, role: str) -> None:
    accepted = {
        "read": ["r-tok", "d-tok", "a-tok"],
        "device": ["d-tok", "a-tok"],
        "admin": ["a-tok"],
    }
    for token in (None, "wrong", "r-tok", "d-tok", "a-tok"):
        client = create_app(TOKENS, MemoryStore(SAMPLE_DEVICES)).test_client()
        headers = {} if token is None else bearer(token)
        response = client.open(path, method=method, data=body, headers=headers)
        if token in accepted[role]:
            assert response.status_code < 300, (token, response.json)
        else:
            assert response.status_code == 401, (token, response.status_code)
            assert response.json == {"msg": f"this needs Authorization: Bearer <the {role} token>"}
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="fleet-monitor"'


def test_a_401_changes_nothing_even_on_the_fast_path() -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    client = create_app(Settings(device_token="d-tok"), store).test_client()
    assert client.post(HEARTBEAT, data=json.dumps({"sent_at": AT})).status_code == 401
    assert (
        client.post(HEARTBEAT, data=json.dumps({"sent_at": AT}), headers=bearer("x")).status_code
        == 401
    )
    assert store.snapshot(DEVICE).last_heartbeat_ns is None
    assert (
        client.post(
            HEARTBEAT, data=json.dumps({"sent_at": AT}), headers=bearer("d-tok")
        ).status_code
        == 204
    )


def test_without_tokens_everything_is_open_and_ops_endpoints_always_are(
    client: FlaskClient,
) -> None:
    assert client.post(HEARTBEAT, data=json.dumps({"sent_at": AT})).status_code == 204
    locked = create_app(TOKENS, MemoryStore(SAMPLE_DEVICES)).test_client()
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"):
        assert locked.get(path).status_code == 200


def test_only_a_device_token_guards_registry_changes_too() -> None:
    client = create_app(Settings(device_token="d-tok"), MemoryStore(SAMPLE_DEVICES)).test_client()
    assert client.put("/api/v1/devices/cam-07").status_code == 401
    assert client.put("/api/v1/devices/cam-07", headers=bearer("d-tok")).status_code == 201
    assert client.get("/api/v1/fleet").status_code == 200  # reads stay open


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    access = Access(None, "d-tok", "a-tok")
    assert access.allows({"HTTP_AUTHORIZATION": "Bearer a-tok"}, "device")
    assert compared == [(b"a-tok", b"d-tok"), (b"a-tok", b"a-tok")]  # every token, no early exit


def test_tokens_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(TOKENS, MemoryStore(SAMPLE_DEVICES)).test_client()
    with caplog.at_level("DEBUG"):
        client.post(HEARTBEAT, data=json.dumps({"sent_at": AT}), headers=bearer("d-tok"))
        client.get("/api/v1/fleet", headers=bearer("wrong-secret"))
    assert "d-tok" not in caplog.text and "wrong-secret" not in caplog.text


# --- rate limits ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == 0.5  # one token comes in half a second
    assert limiter.take("b") == 0.0  # each device has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    clock.now += 100
    assert [limiter.take("a") for _ in range(4)][-1] == 0.5  # saved up to the burst only
    limiter.refund("a")
    assert limiter.take("a") == 0.0


@pytest.mark.parametrize(
    ("text", "rate"),
    [("5/s", 5.0), ("300/m", 5.0), ("10", 10.0), ("7200/h", 2.0), (" 2 / S ", 2.0)],
)
def test_parse_rate(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "x/s", "5/d", "0/s", "-1", "inf", "nan/s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="must be a positive rate like 5/s, 300/m or 10"):
        parse_rate(text)


def test_over_the_rate_is_a_429_with_retry_after_and_changes_nothing(store: Store) -> None:
    client = create_app(Settings(rate_limit=1 / 60, burst=2), store).test_client()
    for minute in range(2):
        body = json.dumps({"sent_at": f"2024-04-02T09:0{minute}:00Z"})
        assert client.post(HEARTBEAT, data=body).status_code == 204
    response = client.post(HEARTBEAT, data=json.dumps({"sent_at": "2024-04-02T09:05:00Z"}))
    assert response.status_code == 429
    assert response.json == {
        "msg": "too many writes for this device: at most 0.0166667 a second, 2 at once"
    }
    assert 55 <= int(response.headers["Retry-After"]) <= 60
    assert store.snapshot(DEVICE).heartbeat_minutes == 2
    other = f"/api/v1/devices/{SAMPLE_DEVICES[1]}/heartbeat"
    assert client.post(other, data=json.dumps({"sent_at": AT})).status_code == 204
    assert client.get(f"/api/v1/devices/{DEVICE}/stats").status_code == 200  # reads: no limit


def test_a_refused_write_does_not_use_up_the_rate(store: Store) -> None:
    client = create_app(Settings(rate_limit=1 / 60, burst=1), store).test_client()
    assert client.post(HEARTBEAT, data="{}").status_code == 400  # fast path, then Flask
    assert client.post(HEARTBEAT, data=json.dumps({"sent_at": AT})).status_code == 204


def test_batch_events_over_the_rate_are_reported(store: Store) -> None:
    client = create_app(Settings(rate_limit=1 / 60, burst=2), store).test_client()
    events = [{"device_id": DEVICE, "type": "heartbeat", "sent_at": AT}] * 3
    events.append({"device_id": SAMPLE_DEVICES[1], "type": "heartbeat", "sent_at": AT})
    assert batch(client, events).json == {
        "accepted": 3,
        "rejected": [{"index": 2, "msg": "too many writes for this device"}],
    }
    unknown = {"device_id": "nope", "type": "heartbeat", "sent_at": AT}
    assert batch(client, [unknown] * 3).json == {  # never limited: refused, tokens given back
        "accepted": 0,
        "rejected": [{"index": n, "msg": "device not found"} for n in range(3)],
    }


def test_an_unknown_device_is_a_404_even_past_its_rate(store: Store) -> None:
    client = create_app(Settings(rate_limit=1 / 60, burst=1), store).test_client()
    path = "/api/v1/devices/nope/heartbeat"
    for _ in range(3):
        response = client.post(path, data=json.dumps({"sent_at": AT}))
        assert (response.status_code, response.json) == (404, {"msg": "device not found"})


def test_the_limiter_keeps_a_bounded_number_of_buckets() -> None:
    limiter = RateLimiter(1 / 3600, 1, clock=lambda: 0.0, max_keys=3)
    assert [limiter.take(key) for key in ("a", "b", "c")] == [0.0, 0.0, 0.0]
    assert limiter.take("a") > 0  # spent
    assert limiter.take("d") == 0.0  # the fourth key drops the oldest bucket, "a"'s
    assert limiter.take("a") == 0.0  # seen again: a fresh bucket (and "b" is dropped)
    assert limiter.take("c") > 0


def test_reads_from_one_ipv6_network_share_one_bucket() -> None:
    client = create_app(Settings(read_rate_limit=1 / 3600, burst=1), MemoryStore()).test_client()
    first = client.get("/api/v1/fleet", environ_base={"REMOTE_ADDR": "2001:db8::1"})
    same_net = client.get("/api/v1/fleet", environ_base={"REMOTE_ADDR": "2001:db8::ffff"})
    other = client.get("/api/v1/fleet", environ_base={"REMOTE_ADDR": "2001:db8:0:1::1"})
    assert (first.status_code, same_net.status_code, other.status_code) == (200, 429, 200)


def test_a_batch_event_the_journal_refuses_says_what_the_single_endpoint_says() -> None:
    class FullDisk:
        def append(self, *args: object) -> int:
            raise JournalError("cannot write the journal: No space left on device")

        def durable(self, lsn: int) -> None:
            pass

        def flush(self) -> None:
            pass

        def problem(self) -> str | None:
            return None

    store = MemoryStore(SAMPLE_DEVICES)
    store.attach_journal(FullDisk())
    client = create_app(Settings(), store).test_client()
    single = client.post(HEARTBEAT, data=json.dumps({"sent_at": AT})).json
    response = batch(client, [{"device_id": DEVICE, "type": "heartbeat", "sent_at": AT}])
    assert single is not None
    assert response.json == {"accepted": 0, "rejected": [{"index": 0, "msg": single["msg"]}]}
    assert single == {
        "msg": "the change was not stored: cannot write the journal: No space left on device"
    }
