"""Fleet views over HTTP (status, pages, registry, summary, windows), with a frozen clock
(injected into the app: the process's own clock is left alone)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain import readmodels
from fleet_monitor.domain.readmodels import Window, make_window
from fleet_monitor.domain.timestamps import parse_rfc3339
from fleet_monitor.http.app import create_app
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import SAMPLE_DEVICES
from tests.support.api import API, assert_error, heartbeat

NOW = "2024-04-02T12:00:00Z"
NOW_NS = parse_rfc3339(NOW)
A, B, C, D, E = sorted(SAMPLE_DEVICES)  # 18-…, 26-…, 38-…, 60-…, b4-…


def get(client: FlaskClient, path: str) -> Any:
    response = client.get(path)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def upload(client: FlaskClient, device: str, sent_at: str, upload_time: int) -> None:
    body = {"sent_at": sent_at, "upload_time": upload_time}
    assert client.post(f"{API}/{device}/stats", json=body).status_code == 204


def frozen_clock() -> int:
    return NOW_NS


@pytest.fixture
def app(store: MemoryStore) -> Flask:
    return create_app(Settings(), store, clock=frozen_clock)


# --- status and the device list -----------------------------------------------------------


def seed_statuses(client: FlaskClient) -> None:
    heartbeat(client, "2024-04-02T11:58:00Z", A)  # 120 s ago: still online
    heartbeat(client, "2024-04-02T11:57:59.999Z", B)  # just over 120 s: offline
    heartbeat(client, "2024-04-02T12:05:00Z", C)  # ahead of our clock: online
    heartbeat(client, "2024-04-02T10:00:00Z", D)
    heartbeat(client, "2024-04-02T11:59:00Z", D)


def test_list_items_and_statuses(client: FlaskClient) -> None:
    seed_statuses(client)
    upload(client, D, NOW, 1_500)
    body = get(client, f"{API}")
    assert body == {
        "devices": [
            {
                "device_id": A,
                "online": True,
                "status": "online",
                "state": "up",
                "labels": {},
                "last_heartbeat_at": "2024-04-02T11:58:00Z",
                "uptime": 100.0,
                "avg_upload_time": "0s",
            },
            {
                "device_id": B,
                "online": False,
                "status": "offline",
                "state": "up",  # received just now, though sent over 120 s ago
                "labels": {},
                "last_heartbeat_at": "2024-04-02T11:57:59.999Z",
                "uptime": 100.0,
                "avg_upload_time": "0s",
            },
            {
                "device_id": C,
                "online": True,
                "status": "online",
                "state": "up",
                "labels": {},
                "last_heartbeat_at": "2024-04-02T12:05:00Z",
                "uptime": 100.0,
                "avg_upload_time": "0s",
            },
            {
                "device_id": D,
                "online": True,
                "status": "online",
                "state": "up",
                "labels": {},
                "last_heartbeat_at": "2024-04-02T11:59:00Z",
                "uptime": 100 * 2 / 119,
                "avg_upload_time": "1.5µs",
            },
            {
                "device_id": E,
                "online": False,
                "status": "never",
                "state": "new",
                "labels": {},
                "last_heartbeat_at": None,
                "uptime": 0.0,
                "avg_upload_time": "0s",
            },
        ],
        "next": None,
    }


@pytest.mark.parametrize(
    ("status", "ids"), [("online", [A, C, D]), ("offline", [B]), ("never", [E])]
)
def test_status_filter(client: FlaskClient, status: str, ids: list[str]) -> None:
    seed_statuses(client)
    body = get(client, f"{API}?status={status}")
    assert [item["device_id"] for item in body["devices"]] == ids
    assert body["next"] is None


def test_offline_after_setting(store: MemoryStore) -> None:
    client = create_app(Settings(offline_after=3600), store, clock=frozen_clock).test_client()
    heartbeat(client, "2024-04-02T11:00:00Z", A)
    assert get(client, f"{API}/{A}")["status"] == "online"


def test_pages_follow_the_cursor(client: FlaskClient) -> None:
    first = get(client, f"{API}?limit=2")
    assert [d["device_id"] for d in first["devices"]] == [A, B]
    second = get(client, f"{API}?limit=2&cursor={first['next']}")
    assert [d["device_id"] for d in second["devices"]] == [C, D]
    third = get(client, f"{API}?limit=2&cursor={second['next']}")
    assert [d["device_id"] for d in third["devices"]] == [E]
    assert third["next"] is None


def test_last_full_page_has_no_next(client: FlaskClient) -> None:
    assert get(client, f"{API}?limit=5")["next"] is None


def test_filtered_pages(client: FlaskClient) -> None:
    seed_statuses(client)
    first = get(client, f"{API}?status=online&limit=2")
    assert [d["device_id"] for d in first["devices"]] == [A, C]
    second = get(client, f"{API}?status=online&limit=2&cursor={first['next']}")
    assert [d["device_id"] for d in second["devices"]] == [D]
    assert second["next"] is None


def test_pages_with_concurrent_inserts_and_removals(
    client: FlaskClient, store: MemoryStore
) -> None:
    for n in range(50):
        store.register(f"dev-{n:03d}")
    seen: list[str] = []
    cursor = None
    stop = threading.Event()
    removed_before_listed: list[bool] = []

    def churn() -> None:
        for n in range(3000):  # bounded, so that paging always reaches the end
            if stop.is_set():
                return
            store.register(f"0-new-{n:05d}")  # sorts before every id: behind the cursor
            store.register(f"dev-{n % 50:03d}-{n:05d}")  # among the originals
            store.register(f"zzz-{n:05d}")  # sorts after every id: ahead of the cursor

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        while True:
            query = f"{API}?limit=7" + (f"&cursor={cursor}" if cursor else "")
            body = get(client, query)
            seen += [d["device_id"] for d in body["devices"]]
            cursor = body["next"]
            if cursor is None:
                break
            if len(seen) == 14:  # an original device ahead of the cursor is removed
                removed_before_listed.append("dev-040" not in seen)
                store.remove("dev-040")
    finally:
        stop.set()
        worker.join()
    assert removed_before_listed == [True]
    assert "dev-040" not in seen, "a device removed ahead of the cursor is not listed"
    assert len(seen) == len(set(seen)), "no device listed twice"
    assert seen == sorted(seen), "pages stay in id order"
    originals = [*sorted(SAMPLE_DEVICES), *(f"dev-{n:03d}" for n in range(50) if n != 40)]
    assert [s for s in seen if s in set(originals)] == sorted(originals)


@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("limit=0", "limit must be a whole number from 1 to 1000"),
        ("limit=1001", "limit must be a whole number from 1 to 1000"),
        ("limit=-1", "limit must be a whole number from 1 to 1000"),
        ("limit=ten", "limit must be a whole number from 1 to 1000"),
        ("limit=", "limit must be a whole number from 1 to 1000"),
        ("status=up", "status must be one of online, offline, never"),
        ("cursor=%21%21", "cursor is not one this service returned in next"),
        ("cursor=", "cursor is not one this service returned in next"),
        ("cursor=_w", "cursor is not one this service returned in next"),
        (
            "limit=%EF%BC%91%EF%BC%90",
            "limit must be a whole number from 1 to 1000",
        ),  # full-width digits "10"
        ("limit=%D9%A1", "limit must be a whole number from 1 to 1000"),  # Arabic-Indic "1"
        ("limit=" + "9" * 4301, "limit must be a whole number from 1 to 1000"),  # int() refuses
        ("limit=" + "0" * 4300 + "1", "limit must be a whole number from 1 to 1000"),
    ],
)
def test_bad_list_queries(client: FlaskClient, query: str, msg: str) -> None:
    assert_error(client.get(f"{API}?{query}"), 400, msg)


# --- one device, and the registry ---------------------------------------------------------


def test_device_detail_before_any_event(client: FlaskClient) -> None:
    assert get(client, f"{API}/{A}") == {
        "device_id": A,
        "online": False,
        "status": "never",
        "state": "new",
        "labels": {},
        "expected_every": 60,
        "grace": 60,
        "last_received_at": None,
        "clock_skew_ns": None,
        "clock_drift": False,
        "first_heartbeat_at": None,
        "last_heartbeat_at": None,
        "heartbeat_minutes": 0,
        "uptime": 0.0,
        "sla_uptime": 0.0,
        "outages": {
            "count": 0,
            "minutes": 0,
            "longest_minutes": 0,
            "mtbf_minutes": None,
            "mttr_minutes": None,
            "maintenance_minutes": 0,
        },
        "upload_count": 0,
        "avg_upload_time": "0s",
        "avg_upload_time_ns": None,
        "min_upload_time_ns": None,
        "max_upload_time_ns": None,
    }


def test_device_detail_after_events(client: FlaskClient) -> None:
    heartbeat(client, "2024-04-02T11:59:30.25+01:00", A)  # 10:59:30.25Z, sent out of order
    heartbeat(client, "2024-04-02T11:59:00Z", A)
    heartbeat(client, "2024-04-02T11:00:00Z", A)
    heartbeat(client, "2024-04-02T11:00:10Z", A)
    for value in (3, 5, 10):
        upload(client, A, "0001-01-01T00:00:00Z", value)
    assert get(client, f"{API}/{A}") == {
        "device_id": A,
        "online": True,
        "status": "online",
        "state": "up",
        "labels": {},
        "expected_every": 60,
        "grace": 60,
        "last_received_at": NOW,
        "clock_skew_ns": -3590 * 10**9,  # the last one received was sent at 11:00:10Z
        "clock_drift": True,
        "first_heartbeat_at": "2024-04-02T10:59:30.25Z",
        "last_heartbeat_at": "2024-04-02T11:59:00Z",
        "heartbeat_minutes": 3,
        "uptime": 5.0,
        "sla_uptime": 5.0,
        "outages": {  # 11:01 to 11:58: 58 minutes of the 61 since 10:59
            "count": 1,
            "minutes": 58,
            "longest_minutes": 58,
            "mtbf_minutes": 3.0,
            "mttr_minutes": 58.0,
            "maintenance_minutes": 0,
        },
        "upload_count": 3,
        "avg_upload_time": "6ns",
        "avg_upload_time_ns": 6,
        "min_upload_time_ns": 3,
        "max_upload_time_ns": 10,
    }


def test_register_delete_and_register_again(client: FlaskClient) -> None:
    created = client.put(f"{API}/cam_01.site:3")
    assert created.status_code == 201
    assert created.get_json()["device_id"] == "cam_01.site:3"
    assert created.get_json()["status"] == "never"
    heartbeat(client, NOW, "cam_01.site:3")
    again = client.put(f"{API}/cam_01.site:3")
    assert again.status_code == 200
    assert again.get_json()["heartbeat_minutes"] == 1
    assert get(client, "/api/v1/fleet")["devices"] == 6
    deleted = client.delete(f"{API}/cam_01.site:3")
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert_error(client.get(f"{API}/cam_01.site:3"), 404, "device not found")
    assert_error(client.get(f"{API}/cam_01.site:3/stats"), 404, "device not found")
    assert_error(client.delete(f"{API}/cam_01.site:3"), 404, "device not found")
    assert client.put(f"{API}/cam_01.site:3").status_code == 201
    fresh = get(client, f"{API}/cam_01.site:3")
    assert (fresh["heartbeat_minutes"], fresh["last_heartbeat_at"]) == (0, None)


@pytest.mark.parametrize("device_id", ["a%20b", "x" * 129, "%C3%BC", "a%2Cb"])
def test_register_rejects_bad_ids(client: FlaskClient, store: MemoryStore, device_id: str) -> None:
    response = client.put(f"{API}/{device_id}")
    assert_error(response, 400, "device_id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
    assert len(store) == 5


@pytest.mark.parametrize("device_id", [".", ".."])
def test_register_rejects_dot_segment_ids(
    client: FlaskClient, store: MemoryStore, device_id: str
) -> None:
    response = client.put(f"{API}/{device_id}")
    assert_error(
        response,
        400,
        "device_id cannot be . or .. (clients normalise such path segments away)",
    )
    assert len(store) == 5
    assert client.put(f"{API}/...").status_code == 201  # three dots are an ordinary id


def test_samples_from_csv_can_be_deleted(client: FlaskClient) -> None:
    assert client.delete(f"{API}/{A}").status_code == 204
    assert A not in [d["device_id"] for d in get(client, API)["devices"]]


# --- the fleet ----------------------------------------------------------------------------


def test_fleet_summary_empty(client: FlaskClient) -> None:
    assert get(client, "/api/v1/fleet") == {
        "devices": 5,
        "online": 0,
        "offline": 0,
        "never_seen": 5,
        "avg_uptime": 0.0,
        "upload_count": 0,
        "avg_upload_time": "0s",
        "states": {"new": 5, "up": 0, "late": 0, "down": 0, "paused": 0},
    }


def test_fleet_summary(client: FlaskClient) -> None:
    seed_statuses(client)
    upload(client, A, NOW, 1_000)
    upload(client, B, NOW, 2_001)
    assert get(client, "/api/v1/fleet") == {
        "devices": 5,
        "online": 3,
        "offline": 1,
        "never_seen": 1,
        "avg_uptime": math.fsum([100.0, 100.0, 100.0, 100 * 2 / 119]) / 4,
        "upload_count": 2,
        "avg_upload_time": "1.5µs",
        "states": {"new": 1, "up": 4, "late": 0, "down": 0, "paused": 0},
    }


# --- windows ------------------------------------------------------------------------------


def minute_heartbeats(client: FlaskClient, device: str, hour: int, minutes: list[int]) -> None:
    for minute in minutes:
        assert (
            heartbeat(client, f"2024-04-02T{hour:02d}:{minute:02d}:30Z", device).status_code == 204
        )


def test_uptime_window_steps_and_span_edges(client: FlaskClient) -> None:
    # heartbeats 10:05..10:14 except 10:07 and 10:08, sent out of order
    minute_heartbeats(client, A, 10, [14, 5, 6, 9, 10, 11, 12, 13])
    body = get(
        client, f"{API}/{A}/uptime?start=2024-04-02T10:00:00Z&end=2024-04-02T10:20:00Z&step=5m"
    )
    assert body == {
        "start": "2024-04-02T10:00:00Z",
        "end": "2024-04-02T10:20:00Z",
        "step": "5m",
        "uptime": 80.0,
        "buckets": [
            {
                "start": "2024-04-02T10:00:00Z",
                "minutes": 0,
                "minutes_with_heartbeat": 0,
                "uptime": None,
            },
            {
                "start": "2024-04-02T10:05:00Z",
                "minutes": 5,
                "minutes_with_heartbeat": 3,
                "uptime": 60.0,
            },
            {
                "start": "2024-04-02T10:10:00Z",
                "minutes": 5,
                "minutes_with_heartbeat": 5,
                "uptime": 100.0,
            },
            {
                "start": "2024-04-02T10:15:00Z",
                "minutes": 0,
                "minutes_with_heartbeat": 0,
                "uptime": None,
            },
        ],
    }


def test_uptime_window_default_is_last_day_by_hour(client: FlaskClient) -> None:
    minute_heartbeats(client, A, 11, list(range(0, 60, 2)))
    body = get(client, f"{API}/{A}/uptime")
    assert (body["start"], body["end"], body["step"]) == (
        "2024-04-01T12:00:00Z",
        "2024-04-02T12:00:00Z",
        "1h",
    )
    assert len(body["buckets"]) == 24
    last = body["buckets"][-1]
    assert last == {
        "start": "2024-04-02T11:00:00Z",
        "minutes": 59,
        "minutes_with_heartbeat": 30,
        "uptime": 100 * 30 / 59,
    }
    assert all(b["uptime"] is None for b in body["buckets"][:-1])


def test_uptime_window_before_first_heartbeat(client: FlaskClient) -> None:
    minute_heartbeats(client, A, 11, [0, 1])
    body = get(client, f"{API}/{A}/uptime?start=2024-04-02T09:00:00Z&end=2024-04-02T10:00:00Z")
    assert body["uptime"] is None
    assert body["buckets"] == [
        {"start": "2024-04-02T09:00:00Z", "minutes": 0, "minutes_with_heartbeat": 0, "uptime": None}
    ]


def test_uptime_window_partial_minutes_and_last_bucket(client: FlaskClient) -> None:
    minute_heartbeats(client, A, 10, list(range(60)))
    query = "start=2024-04-02T10:00:30Z&end=2024-04-02T10:02:00.5Z&step=1m"
    body = get(client, f"{API}/{A}/uptime?{query}")
    assert [b["start"] for b in body["buckets"]] == ["2024-04-02T10:01:00Z", "2024-04-02T10:02:00Z"]
    assert body["uptime"] == 100.0


def test_uptime_window_never_seen_device(client: FlaskClient) -> None:
    body = get(client, f"{API}/{A}/uptime?step=1d")
    assert body["uptime"] is None
    assert [b["minutes"] for b in body["buckets"]] == [0]


@pytest.mark.parametrize("path", ["uptime", "uploads"])
@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("step=2h", "step must be one of 1m, 5m, 1h, 1d"),
        ("start=2024-04-02T10:00:00Z&end=2024-04-02T10:00:00Z", "end must be after start"),
        ("start=2024-04-02T11:00:00Z&end=2024-04-02T10:00:00Z", "end must be after start"),
        (
            "start=yesterday",
            'start is not an RFC 3339 date-time with an offset, e.g. "2024-03-01T12:00:00Z"',
        ),
        (
            "end=2024-04-02T10:00:00",
            'end is not an RFC 3339 date-time with an offset, e.g. "2024-03-01T12:00:00Z"',
        ),
        (
            "start=2024-03-01T00:00:00Z&step=1m",
            "the window holds 46800 steps of 1m; at most 10000 are allowed: "
            "use a larger step or a shorter window",
        ),
    ],
)
def test_bad_window_queries(client: FlaskClient, path: str, query: str, msg: str) -> None:
    assert_error(client.get(f"{API}/{A}/{path}?{query}"), 400, msg)


@pytest.mark.parametrize("path", ["uptime", "uploads"])
@pytest.mark.parametrize(
    ("end", "start", "buckets"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", 0),
        ("0001-01-01T00:00:00.000000001Z", "0001-01-01T00:00:00Z", 1),
        ("0001-01-01T23:59:00Z", "0001-01-01T00:00:00Z", 24),
        ("0001-01-02T00:00:00Z", "0001-01-01T00:00:00Z", 24),
        ("0001-01-02T00:00:01Z", "0001-01-01T00:00:01Z", 24),
    ],
)
def test_default_window_start_stops_at_year_1(
    client: FlaskClient, path: str, end: str, start: str, buckets: int
) -> None:
    response = client.get(f"{API}/{A}/{path}?end={end}")
    if end == start:  # nothing before year 1: an empty window
        assert_error(response, 400, "end must be after start")
        return
    body = get(client, f"{API}/{A}/{path}?end={end}")
    assert (body["start"], body["end"], len(body["buckets"])) == (start, end, buckets)


def test_window_of_exactly_10000_steps_is_allowed(client: FlaskClient) -> None:
    body = get(client, f"{API}/{A}/uptime?start=2024-03-26T13:20:00Z&step=1m")
    assert len(body["buckets"]) == 10_000


@pytest.mark.parametrize("path", ["uptime", "uploads"])
def test_window_of_unknown_device_is_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(f"{API}/nope/{path}?step=bad"), 404, "device not found")


def test_upload_aggregates_by_window(client: FlaskClient) -> None:
    upload(client, A, "2024-04-02T10:59:59Z", 7)  # before the window
    upload(client, A, "2024-04-02T11:00:00Z", 10)
    upload(client, A, "2024-04-02T11:00:30Z", 20)
    upload(client, A, "2024-04-02T13:10:00+02:00", 1_000_000)  # 11:10Z
    upload(client, A, "2024-04-02T11:04:00Z", 5)  # out of order
    body = get(
        client, f"{API}/{A}/uploads?start=2024-04-02T11:00:00Z&end=2024-04-02T11:15:00Z&step=5m"
    )
    assert body == {
        "start": "2024-04-02T11:00:00Z",
        "end": "2024-04-02T11:15:00Z",
        "step": "5m",
        "count": 4,
        "sum_ns": 1_000_035,
        "min_ns": 5,
        "max_ns": 1_000_000,
        "avg_ns": 250_008,
        "avg": "250.008µs",
        "buckets": [
            {
                "start": "2024-04-02T11:00:00Z",
                "count": 3,
                "sum_ns": 35,
                "min_ns": 5,
                "max_ns": 20,
                "avg_ns": 11,
                "avg": "11ns",
            },
            {
                "start": "2024-04-02T11:05:00Z",
                "count": 0,
                "sum_ns": 0,
                "min_ns": None,
                "max_ns": None,
                "avg_ns": None,
                "avg": None,
            },
            {
                "start": "2024-04-02T11:10:00Z",
                "count": 1,
                "sum_ns": 1_000_000,
                "min_ns": 1_000_000,
                "max_ns": 1_000_000,
                "avg_ns": 1_000_000,
                "avg": "1ms",
            },
        ],
    }


def test_upload_sums_beyond_int64_stay_exact(client: FlaskClient) -> None:
    for _ in range(3):
        upload(client, A, NOW, 2**63 - 1)
    body = get(client, f"{API}/{A}/uploads?start={NOW}&end=2024-04-02T12:01:00Z&step=1m")
    assert body["sum_ns"] == 3 * (2**63 - 1)
    assert body["avg"] == "2562047h47m16.854775807s"


def test_window_helper_minute_membership() -> None:
    window = make_window(90 * 10**9, 181 * 10**9, "1m", now_ns=0)
    assert (window.first_minute, window.end_minute) == (2, 4)
    assert window.buckets() == [(2, 3), (3, 4)]
    assert Window(0, 60 * 10**9 * 7, "5m").buckets() == [(0, 5), (5, 7)]


def test_readers_and_writers_concurrently(client: FlaskClient, store: MemoryStore) -> None:
    errors: list[BaseException] = []
    writers, per_writer = 8, 300

    def write(index: int) -> None:
        try:
            local = client.application.test_client()
            for i in range(per_writer):
                minute = index * per_writer + i
                at = f"2024-04-01T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z"
                day = "02" if minute >= 1440 else "01"
                at = at.replace("2024-04-01", f"2024-04-{day}")
                assert heartbeat(local, at, A).status_code == 204
        except BaseException as error:
            errors.append(error)

    def read() -> None:
        try:
            local = client.application.test_client()
            for _ in range(40):
                body = get(local, f"{API}/{A}/uptime?step=5m")
                for bucket in body["buckets"]:
                    assert bucket["minutes_with_heartbeat"] <= bucket["minutes"]
                get(local, "/api/v1/fleet")
                get(local, f"{API}?status=online")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    threads += [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.snapshot(A).heartbeat_minutes == writers * per_writer


def test_a_filtered_page_looks_at_a_bounded_number_of_devices(
    client: FlaskClient, store: MemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readmodels, "SCAN_LIMIT", 3)
    heartbeat(client, "2024-04-02T11:59:00Z", E)  # the only online device: the last id
    body = get(client, f"{API}?status=online&limit=5")
    assert (body["devices"], body["next"]) == ([], "MzgtNGUtNzMtZTAtMzMtNTk")  # after C
    body = get(client, f"{API}?status=online&limit=5&cursor={body['next']}")
    assert [d["device_id"] for d in body["devices"]] == [E]
    assert body["next"] is None
