"""``GET /api/v1/devices/{id}/outages`` on every store, with a frozen clock."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.bitmaps import CHUNK_MINUTES
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.domain.timestamps import MINUTE_NS, format_minute, parse_rfc3339
from fleet_monitor.http.app import create_app
from fleet_monitor.store.protocol import Store
from tests.conftest import DEVICE
from tests.support.api import API, assert_error, heartbeat

NOW = "2024-04-02T12:00:00Z"
NOW_MINUTE = parse_rfc3339(NOW) // MINUTE_NS
URL = f"{API}/{DEVICE}/outages"


@pytest.fixture
def app(store: Store) -> Flask:
    return create_app(Settings(), store, clock=lambda: NOW_MINUTE * MINUTE_NS)


def at(minutes_ago: int) -> str:
    return format_minute(NOW_MINUTE - minutes_ago)


def get(client: FlaskClient, query: str = "") -> Any:
    response = client.get(URL + query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def seed(client: FlaskClient) -> None:
    """Heartbeats 60 to 56 minutes ago, 50, and 48 to 41: then nothing."""
    for ago in [*range(60, 55, -1), 50, *range(48, 40, -1)]:
        assert heartbeat(client, at(ago)).status_code == 204


def test_the_outages_of_a_device_and_their_totals(client: FlaskClient) -> None:
    seed(client)
    assert get(client) == {
        "device_id": DEVICE,
        "start": at(60),
        "end": NOW,
        "min": 1,
        "outages": [
            {
                "start": at(55),
                "end": at(50),
                "minutes": 5,
                "open": False,
                "maintenance_minutes": 0,
                "in_maintenance": False,
            },
            {
                "start": at(49),
                "end": at(48),
                "minutes": 1,
                "open": False,
                "maintenance_minutes": 0,
                "in_maintenance": False,
            },
            {
                "start": at(40),
                "end": None,
                "minutes": 40,
                "open": True,
                "maintenance_minutes": 0,
                "in_maintenance": False,
            },
        ],
        "totals": {
            "count": 3,
            "minutes": 46,
            "longest_minutes": 40,
            "mtbf_minutes": (60 - 46) / 3,
            "mttr_minutes": 46 / 3,
            "maintenance_minutes": 0,
        },
        "next": None,
    }


def test_pages_follow_their_cursor(client: FlaskClient) -> None:
    seed(client)
    first = get(client, "?limit=2")
    assert [o["start"] for o in first["outages"]] == [at(55), at(49)]
    assert first["next"] is not None
    second = get(client, f"?limit=2&cursor={first['next']}")
    assert [o["start"] for o in second["outages"]] == [at(40)]
    assert second["next"] is None
    assert second["totals"] == first["totals"]


def test_min_and_a_window(client: FlaskClient) -> None:
    seed(client)
    assert [o["minutes"] for o in get(client, "?min=5")["outages"]] == [5, 40]
    cut = get(client, f"?start={at(52)}&end={at(30)}")
    assert (cut["start"], cut["end"]) == (at(52), at(30))
    assert cut["outages"] == [
        {
            "start": at(52),
            "end": at(50),
            "minutes": 2,
            "open": False,
            "maintenance_minutes": 0,
            "in_maintenance": False,
        },
        {
            "start": at(49),
            "end": at(48),
            "minutes": 1,
            "open": False,
            "maintenance_minutes": 0,
            "in_maintenance": False,
        },
        {
            "start": at(40),
            "end": at(30),
            "minutes": 10,
            "open": False,
            "maintenance_minutes": 0,
            "in_maintenance": False,
        },
    ]


def test_a_late_heartbeat_closes_its_minute(client: FlaskClient) -> None:
    seed(client)
    assert heartbeat(client, at(49)).status_code == 204
    assert [o["start"] for o in get(client)["outages"]] == [at(55), at(40)]


def test_a_device_without_heartbeats_has_none(client: FlaskClient) -> None:
    reply = get(client)
    assert reply["outages"] == [] and reply["totals"]["count"] == 0
    assert reply["totals"]["mtbf_minutes"] is None


def test_a_year_of_gaps_across_chunks(client: FlaskClient, store: Store) -> None:
    first = NOW_MINUTE - 3 * CHUNK_MINUTES
    minutes = [m for m in range(first, NOW_MINUTE) if m % 7]  # a gap every 7th minute
    store.record_many([(DEVICE, Heartbeat(m * MINUTE_NS)) for m in minutes])
    reply = get(client, "?limit=1000")
    gaps = [m for m in range(minutes[0], NOW_MINUTE) if not m % 7]  # from the first heartbeat
    assert reply["totals"]["count"] == len(gaps)
    assert [o["start"] for o in reply["outages"]] == [format_minute(m) for m in gaps[:1000]]
    assert all(o["minutes"] == 1 for o in reply["outages"])


@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("?min=0", "min must be a whole number from 1 to 1000000000"),
        ("?min=x", "min must be a whole number from 1 to 1000000000"),
        ("?limit=1001", "limit must be a whole number from 1 to 1000"),
        ("?cursor=zzz", "cursor is not one this service returned in next"),
        ("?cursor=bTE", "cursor is not one this service returned in next"),  # m1: outside
        (f"?start={NOW}&end={NOW}", "end must be after start"),
        ("?start=yesterday", "start is not an RFC 3339 date-time"),
    ],
)
def test_bad_queries_are_400s(client: FlaskClient, query: str, msg: str) -> None:
    seed(client)
    response = client.get(URL + query)
    assert response.status_code == 400
    assert response.get_json()["msg"].startswith(msg)


def test_an_unknown_device_is_a_404(client: FlaskClient) -> None:
    assert_error(client.get(f"{API}/nope/outages"), 404, "device not found")


@pytest.mark.parametrize(
    "url",
    [
        f"{URL}?end=0001-01-01T00:00:00Z",
        f"{URL}?start=9999-12-31T23:59:30Z",
        f"{URL}?end=9999-12-31T23:59:59.999Z",
        "/api/v1/fleet/outages?group_by=site&end=0001-01-01T00:00:00Z",
        "/api/v1/fleet/outages?group_by=site&start=9999-12-31T23:59:30Z",
        "/api/v1/fleet/outages?group_by=site&start=0001-01-01T00:00:00Z&end=0001-01-01T00:01:00Z",
    ],
)
def test_windows_at_the_ends_of_time_are_answered(client: FlaskClient, url: str) -> None:
    seed(client)
    assert heartbeat(client, "0001-01-01T00:00:00Z").status_code == 204
    assert heartbeat(client, "9999-12-31T23:59:59Z").status_code == 204
    assert client.get(url).status_code == 200
    assert client.get(f"{API}/{DEVICE}").status_code == 200


def test_cursors_before_1970(store: Store) -> None:
    clock = 2 * 3600 * 10**9  # 1970-01-01T02:00Z
    client = create_app(Settings(), store, clock=lambda: clock).test_client()
    for sent in ("1969-12-31T23:50:00Z", "1969-12-31T23:52:00Z", "1969-12-31T23:55:00Z"):
        assert heartbeat(client, sent).status_code == 204
    first = client.get(f"{URL}?limit=1").get_json()
    assert first["outages"][0]["start"] == "1969-12-31T23:51:00Z"
    second = client.get(f"{URL}?limit=1&cursor={first['next']}").get_json()
    assert second["outages"][0]["start"] == "1969-12-31T23:53:00Z"
