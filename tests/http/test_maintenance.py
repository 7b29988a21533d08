"""Maintenance windows on every store: one-off and recurring, paused devices, outages marked,
SLA uptime without maintenance minutes, and the errors."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.maintenance import MAX_WINDOWS, parse_window
from fleet_monitor.domain.timestamps import NS_PER_SECOND, parse_rfc3339
from fleet_monitor.http.app import create_app
from fleet_monitor.store.protocol import Store
from tests.conftest import SAMPLE_DEVICES
from tests.support.api import API, assert_error, heartbeat
from tests.support.clock import Clock

NOW = "2024-04-02T12:00:00Z"
A, B = sorted(SAMPLE_DEVICES)[:2]
URL = "/api/v1/maintenance"


@pytest.fixture
def clock() -> Clock:
    return Clock(parse_rfc3339(NOW))


@pytest.fixture
def app(store: Store, clock: Clock) -> Flask:
    return create_app(Settings(), store, clock=clock)


def post(client: FlaskClient, body: object) -> Any:
    return client.post(URL, json=body)


def seed(client: FlaskClient) -> None:
    """A at 10:00-10:02 and 10:10-10:11, labelled site=paris; B labelled site=lyon."""
    client.put(f"{API}/{A}", json={"labels": {"site": "paris"}})
    client.put(f"{API}/{B}", json={"labels": {"site": "lyon"}})
    for minute in ("10:00", "10:01", "10:02", "10:10", "10:11"):
        assert heartbeat(client, f"2024-04-02T{minute}:00Z", A).status_code == 204


def test_a_one_off_window_marks_outages_and_sla_uptime(client: FlaskClient) -> None:
    seed(client)
    created = post(
        client,
        {
            "selector": {"site": "paris"},
            "start": "2024-04-02T10:05:00Z",
            "end": "2024-04-02T10:08:00Z",
            "reason": "disk swap",
        },
    )
    assert created.status_code == 201
    window = created.get_json()
    assert len(window.pop("id")) == 32
    assert window == {
        "selector": {"site": "paris"},
        "devices": [],
        "start": "2024-04-02T10:05:00Z",
        "end": "2024-04-02T10:08:00Z",
        "cron": None,
        "duration": None,
        "reason": "disk swap",
        "active": False,
    }
    detail = client.get(f"{API}/{A}").get_json()
    assert (detail["uptime"], detail["sla_uptime"]) == (100 * 5 / 11, 100 * 5 / 8)
    assert detail["state"] == "up"  # the window is over
    outages = client.get(f"{API}/{A}/outages?end=2024-04-02T10:12:00Z").get_json()
    assert outages["outages"] == [
        {
            "start": "2024-04-02T10:03:00Z",
            "end": "2024-04-02T10:10:00Z",
            "minutes": 7,
            "open": False,
            "maintenance_minutes": 3,
            "in_maintenance": False,
        }
    ]
    assert outages["totals"]["maintenance_minutes"] == 3
    assert client.get(f"{API}/{B}").get_json()["sla_uptime"] == 0.0  # no heartbeat
    whole = {"devices": [A], "start": "2024-04-02T10:03:00Z", "end": "2024-04-02T10:10:00Z"}
    assert post(client, whole).status_code == 201
    outages = client.get(f"{API}/{A}/outages?end=2024-04-02T10:12:00Z").get_json()
    assert [(o["maintenance_minutes"], o["in_maintenance"]) for o in outages["outages"]] == [
        (7, True)
    ]
    assert client.get(f"{API}/{A}").get_json()["sla_uptime"] == 100.0  # 5 of 11 - 7 minutes


def test_a_recurring_window_pauses_its_devices_while_it_lasts(
    client: FlaskClient, clock: Clock
) -> None:
    seed(client)
    window = post(client, {"devices": [A], "cron": "0 12 * * *", "duration": 3600}).get_json()
    assert (window["start"], window["active"], window["end"]) == (NOW, True, None)
    assert client.get(f"{API}/{A}").get_json()["state"] == "paused"
    assert client.get(f"{API}/{B}").get_json()["state"] == "new"
    states = client.get("/api/v1/fleet").get_json()["states"]
    assert (states["paused"], states["new"]) == (1, len(SAMPLE_DEVICES) - 1)
    paused = client.get(f"{API}?state=paused").get_json()["devices"]
    assert [d["device_id"] for d in paused] == [A]
    clock.now += 3600 * NS_PER_SECOND  # 13:00: the occurrence is over
    assert client.get(f"{API}/{A}").get_json()["state"] == "down"
    assert client.get(URL).get_json()["windows"][0]["active"] is False
    clock.now += 23 * 3600 * NS_PER_SECOND  # 12:00 the next day: the next one
    assert client.get(f"{API}/{A}").get_json()["state"] == "paused"


def test_list_and_delete(client: FlaskClient) -> None:
    later = post(client, {"devices": [A], "start": "2024-05-01T00:00:00Z",
                          "end": "2024-05-02T00:00:00Z"}).get_json()  # fmt: skip
    sooner = post(client, {"devices": [B], "start": "2024-04-03T00:00:00Z",
                           "end": "2024-04-04T00:00:00Z"}).get_json()  # fmt: skip
    listed = client.get(URL).get_json()["windows"]
    assert [w["id"] for w in listed] == [sooner["id"], later["id"]]  # by start
    assert client.delete(f"{URL}/{sooner['id']}").status_code == 204
    assert [w["id"] for w in client.get(URL).get_json()["windows"]] == [later["id"]]
    assert_error(client.delete(f"{URL}/{sooner['id']}"), 404, "maintenance window not found")
    assert_error(client.delete(f"{URL}/nope"), 404, "maintenance window not found")


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ({"devices": [A]}, "a one-off window needs start and end"),
        ({"start": NOW, "end": NOW}, "a window needs a selector (labels) or devices (ids)"),
        (
            {"devices": [A], "selector": {"site": "x"}, "start": NOW, "end": NOW},
            "a window needs a selector (labels) or devices (ids), not both",
        ),
        ({"devices": [A], "start": NOW, "end": NOW}, "end must be after start"),
        ({"devices": [A], "cron": "0 2 * *", "duration": 60}, "cron '0 2 * *' is not a cron"),
        ({"devices": [A], "cron": "0 2 * * *", "duration": 59}, "duration must be a whole"),
        ({"devices": [A], "cron": "*/30 * * * *", "duration": 60}, "cron '*/30 * * * *' fires"),
        ({"devices": [A], "cron": "0 2 * * *"}, "duration must be a whole number of seconds"),
        ({"devices": [A], "start": NOW, "end": "x"}, "end is not an RFC 3339"),
        (
            {"devices": [A], "start": NOW, "duration": 60, "end": "2025-01-01T00:00:00Z"},
            "duration belongs to a recurring window",
        ),
        ({"devices": ["bad id"], "start": NOW, "end": "2025-01-01T00:00:00Z"}, "devices: 'bad id'"),
        ({"selector": {}, "start": NOW, "end": "2025-01-01T00:00:00Z"}, "selector must be"),
        ({"selector": {"Site": "x"}, "start": NOW, "end": "2025-01-01T00:00:00Z"}, "selector: "),
        ({"devices": [A], "start": NOW, "end": "2025-01-01T00:00:00Z", "reason": 3}, "reason"),
        ({"devices": [A], "colour": "red"}, "unknown field 'colour'"),
    ],
)
def test_a_bad_window_is_a_400_and_nothing_is_kept(
    client: FlaskClient, body: object, msg: str
) -> None:
    reply = post(client, body)
    assert reply.status_code == 400 and reply.get_json()["msg"].startswith(msg), reply.get_json()
    assert client.get(URL).get_json() == {"windows": []}


def test_the_fleet_keeps_at_most_so_many_windows(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fleet_monitor.store.memory.MAX_WINDOWS", 2)
    monkeypatch.setattr("fleet_monitor.store.valkey.MAX_WINDOWS", 2)
    body = {"devices": [A], "start": NOW, "end": "2025-01-01T00:00:00Z"}
    assert [post(client, body).status_code for _ in range(2)] == [201, 201]
    assert_error(
        post(client, body),
        422,
        "the fleet has 2 maintenance windows, the most allowed: delete some first",
    )
    assert MAX_WINDOWS == 1000


def test_windows_at_the_ends_of_time_never_break_a_read(client: FlaskClient) -> None:
    assert heartbeat(client, "0001-01-01T00:00:00Z", A).status_code == 204
    assert heartbeat(client, "9999-12-31T23:59:00Z", A).status_code == 204
    never = {"devices": [A], "cron": "0 0 1 1 *", "duration": 3600, "start": "9999-06-01T00:00:00Z"}
    assert_error(
        post(client, never),
        400,
        "cron '0 0 1 1 *' never fires after start (before the end of year 9999)",
    )
    for body in (
        {
            "devices": [A],
            "cron": "0 * * * *",
            "duration": 31622400,
            "start": "0001-01-01T00:00:00Z",
        },
        {"devices": [A], "cron": "59 23 31 12 *", "duration": 60, "start": "9999-12-31T23:58:00Z"},
        {"devices": [A], "start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"},
    ):
        assert post(client, body).status_code == 201
    for url in (
        f"{API}/{A}",
        f"{API}/{A}/outages",
        URL,
        "/api/v1/fleet",
        API,
        "/api/v1/fleet?group_by=site",
        "/api/v1/fleet/outages?group_by=site",
    ):
        assert client.get(url).status_code == 200, url
    assert client.get(f"{API}/{A}").get_json()["state"] == "paused"


def test_a_window_ending_at_the_epoch_ends_there(store: Store) -> None:
    clock = Clock(2 * 3600 * NS_PER_SECOND)  # 1970-01-01T02:00Z
    client = create_app(Settings(), store, clock=clock).test_client()
    for sent in ("1969-12-31T22:00:00Z", "1970-01-01T01:59:00Z"):
        assert heartbeat(client, sent, A).status_code == 204
    body = {"devices": [A], "start": "1969-12-31T23:00:00Z", "end": "1970-01-01T00:00:00Z"}
    assert post(client, body).status_code == 201
    outage = client.get(f"{API}/{A}/outages").get_json()["outages"][0]
    assert (outage["minutes"], outage["maintenance_minutes"]) == (238, 60)


def test_a_recurring_window_is_active_until_its_last_occurrence_ends(clock: Clock) -> None:
    window = parse_window(
        {"devices": [A], "cron": "0 * * * *", "duration": 7200,
         "start": "2024-04-09T00:00:00Z", "end": "2024-04-09T10:30:00Z"},
        clock.now,
    )  # fmt: skip
    at = parse_rfc3339("2024-04-09T11:15:00Z")  # inside 10:00-12:00, the last one
    assert window.active(at) is True
    assert window.intervals(at, at + 1) == [(parse_rfc3339("2024-04-09T10:00:00Z"),
                                               parse_rfc3339("2024-04-09T12:00:00Z"))]  # fmt: skip
    assert window.active(parse_rfc3339("2024-04-09T12:00:00Z")) is False
