"""Labels and a device's own expectations (PUT body), label selectors and the fleet grouped by
a label, on every store, with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.domain.profiles import ExpectationRule, Profile
from fleet_monitor.domain.timestamps import MINUTE_NS, NS_PER_SECOND, format_rfc3339
from fleet_monitor.http.app import create_app
from fleet_monitor.store.protocol import Store
from tests.conftest import SAMPLE_DEVICES
from tests.support.api import API, assert_error, heartbeat
from tests.support.clock import Clock

NOW = 28_500_000 * MINUTE_NS  # a whole minute
A, B, C, D, E = sorted(SAMPLE_DEVICES)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def app(store: Store, clock: Clock) -> Flask:
    return create_app(Settings(expected_every=60, grace=60), store, clock=clock)


def put(client: FlaskClient, device: str, body: object) -> Any:
    return client.put(f"{API}/{device}", json=body)


def test_a_put_body_sets_labels_and_expectations(client: FlaskClient) -> None:
    reply = put(client, A, {"labels": {"site": "paris", "rack": "r1"}, "expected_every": 300})
    assert reply.status_code == 200
    body = reply.get_json()
    assert (body["labels"], body["expected_every"], body["grace"]) == (
        {"rack": "r1", "site": "paris"},
        300,
        60,
    )
    again = put(client, A, {"grace": 5}).get_json()  # other fields stay
    assert (again["labels"], again["expected_every"], again["grace"]) == (
        {"rack": "r1", "site": "paris"},
        300,
        5,
    )
    back = put(client, A, {"labels": {}, "expected_every": None, "grace": None}).get_json()
    assert (back["labels"], back["expected_every"], back["grace"]) == ({}, 60, 60)
    created = put(client, "cam-09", {"labels": {"site": "lyon"}})
    assert created.status_code == 201 and created.get_json()["labels"] == {"site": "lyon"}
    assert client.put(f"{API}/{B}").get_json()["labels"] == {}  # no body: as before


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ({"colour": "red"}, "unknown field 'colour': a device takes labels, expected_every, grace"),
        ({"labels": ["site"]}, "labels must be an object of strings"),
        ({"labels": {"Site": "x"}}, "label 'Site': a key is 1 to 63 characters of a-z 0-9 _ . -"),
        ({"labels": {"site": 3}}, "label 'site': a value is a string of 1 to 128 characters, none"),
        (
            {"labels": {"site": ""}},
            "label 'site': a value is a string of 1 to 128 characters, none",
        ),
        ({"labels": {"site": "a\nb"}}, "label 'site': a value is a string of 1 to 128 characters"),
        ({"labels": {f"k{n}": "v" for n in range(17)}}, "a device has at most 16 labels"),
        ({"expected_every": 0}, "expected_every must be null or a whole number of seconds from 1"),
        ({"expected_every": 1.5}, "expected_every must be null or a whole number of seconds"),
        ({"grace": -1}, "grace must be null or a whole number of seconds from 0"),
        ([], "request body must be a JSON object"),
    ],
)
def test_a_bad_body_changes_nothing(client: FlaskClient, body: object, msg: str) -> None:
    put(client, A, {"labels": {"site": "paris"}})
    reply = put(client, A, body)
    assert reply.status_code == 400 and reply.get_json()["msg"].startswith(msg)
    assert client.get(f"{API}/{A}").get_json()["labels"] == {"site": "paris"}
    assert put(client, "cam-new", body).status_code == 400
    assert client.get(f"{API}/cam-new").status_code == 404  # not registered either


def test_a_devices_own_expectations_judge_it(client: FlaskClient, clock: Clock) -> None:
    put(client, A, {"expected_every": 600, "grace": 0})
    assert heartbeat(client, format_rfc3339(clock.now), A).status_code == 204
    assert heartbeat(client, format_rfc3339(clock.now), B).status_code == 204
    clock.now += 300 * NS_PER_SECOND
    states = {d["device_id"]: d["state"] for d in client.get(API).get_json()["devices"]}
    assert (states[A], states[B]) == ("up", "down")
    clock.now += 301 * NS_PER_SECOND
    assert client.get(f"{API}/{A}").get_json()["state"] == "down"


def test_label_selectors_filter_the_list(client: FlaskClient) -> None:
    put(client, A, {"labels": {"site": "paris", "rack": "r1"}})
    put(client, B, {"labels": {"site": "paris", "rack": "r2"}})
    put(client, C, {"labels": {"site": "lyon"}})

    def ids(query: str) -> list[str]:
        return [d["device_id"] for d in client.get(f"{API}?{query}").get_json()["devices"]]

    assert ids("label=site:paris") == [A, B]
    assert ids("label=site:paris&label=rack:r2") == [B]
    assert ids("label=site:nowhere") == []
    assert client.get(f"{API}?label=site:paris").get_json()["devices"][0]["labels"] == {
        "rack": "r1",
        "site": "paris",
    }
    assert_error(
        client.get(f"{API}?label=site"),
        400,
        "label must be key:value, the key 1 to 63 characters of a-z 0-9 _ . -, starting with a "
        "letter; got 'site'",
    )


def test_the_fleet_grouped_by_a_label(client: FlaskClient, store: Store, clock: Clock) -> None:
    put(client, A, {"labels": {"site": "paris"}})
    put(client, B, {"labels": {"site": "paris"}})
    put(client, C, {"labels": {"site": "lyon"}})
    now = NOW // MINUTE_NS
    # A: every minute of the last 2 days; B: the last 10 days, half the minutes; C: nothing;
    # D (no label): the last hour.
    store.record_many([(A, Heartbeat(m * MINUTE_NS)) for m in range(now - 2880, now)])
    store.record_many([(B, Heartbeat(m * MINUTE_NS)) for m in range(now - 14400, now, 2)])
    store.record_many([(D, Heartbeat(m * MINUTE_NS)) for m in range(now - 60, now)])
    clock.now = NOW + 30 * NS_PER_SECOND  # the current minute is not over: not counted
    reply = client.get("/api/v1/fleet?group_by=site").get_json()
    assert reply == {
        "group_by": "site",
        "groups": [
            {
                "value": "lyon",
                "devices": 1,
                "states": {"new": 1, "up": 0, "late": 0, "down": 0, "paused": 0},
                "uptime": {"24h": None, "7d": None, "30d": None},
                "downtime_minutes": {"24h": 0, "7d": 0, "30d": 0},
            },
            {
                "value": "paris",
                "devices": 2,
                # no arrival recorded (written straight to the store): judged on sent_at, A's
                # 90 s ago, B's 150 s ago
                "states": {"new": 0, "up": 0, "late": 1, "down": 1, "paused": 0},
                "uptime": {
                    "24h": 100 * (1440 + 720) / (1440 + 1440),
                    "7d": 100 * (2880 + 5040) / (2880 + 10080),
                    "30d": 100 * (2880 + 7200) / (2880 + 14400),
                },
                "downtime_minutes": {"24h": 720, "7d": 5040, "30d": 7200},
            },
            {
                "value": None,
                "devices": 2,
                "states": {"new": 1, "up": 0, "late": 1, "down": 0, "paused": 0},
                "uptime": {"24h": 100.0, "7d": 100.0, "30d": 100.0},
                "downtime_minutes": {"24h": 0, "7d": 0, "30d": 0},
            },
        ],
    }


def test_group_by_needs_a_label_key(client: FlaskClient) -> None:
    assert_error(
        client.get("/api/v1/fleet?group_by=Site"),
        400,
        "group_by must be a label key: 1 to 63 characters of a-z 0-9 _ . -, starting with a letter",
    )


def test_the_fleet_summary_of_a_selector(client: FlaskClient, clock: Clock) -> None:
    put(client, A, {"labels": {"site": "paris"}})
    put(client, B, {"labels": {"site": "paris"}})
    assert heartbeat(client, format_rfc3339(clock.now), A).status_code == 204
    summary = client.get("/api/v1/fleet?label=site:paris").get_json()
    assert (summary["devices"], summary["states"]["up"], summary["states"]["new"]) == (2, 1, 1)
    assert client.get("/api/v1/fleet?label=site:nowhere").get_json()["devices"] == 0
    grouped = client.get("/api/v1/fleet?group_by=site&label=site:paris").get_json()
    assert [group["value"] for group in grouped["groups"]] == ["paris"]


def test_site_outages_are_minutes_when_most_of_a_group_was_down(
    client: FlaskClient, store: Store
) -> None:
    for device in (A, B, C):
        put(client, device, {"labels": {"site": "paris"}})
    put(client, D, {"labels": {"site": "lyon"}})
    now = NOW // MINUTE_NS
    # paris: A and B silent 60 to 51 minutes ago, C throughout; C alone silent 30 to 21 ago;
    # lyon: D every minute
    for device in (A, B, C):
        silent = range(now - 60, now - 50) if device != C else range(now - 30, now - 20)
        minutes = [m for m in range(now - 120, now) if m not in silent]
        store.record_many([(device, Heartbeat(m * MINUTE_NS)) for m in minutes])
    store.record_many([(D, Heartbeat(m * MINUTE_NS)) for m in range(now - 120, now)])
    reply = client.get("/api/v1/fleet/outages?group_by=site&threshold=50").get_json()
    assert reply == {
        "group_by": "site",
        "threshold": 50.0,
        "start": format_rfc3339((now - 1440) * MINUTE_NS),
        "end": format_rfc3339(now * MINUTE_NS),
        "groups": [
            {"value": "lyon", "devices": 1, "outages": []},
            {
                "value": "paris",
                "devices": 3,
                "outages": [
                    {
                        "start": format_rfc3339((now - 60) * MINUTE_NS),
                        "end": format_rfc3339((now - 50) * MINUTE_NS),
                        "minutes": 10,
                        "peak_down_percent": 100 * 2 / 3,
                    }
                ],
            },
            {"value": None, "devices": 1, "outages": []},
        ],
    }
    low = client.get("/api/v1/fleet/outages?group_by=site&threshold=30").get_json()
    paris = low["groups"][1]["outages"]
    assert [(o["minutes"], o["peak_down_percent"]) for o in paris] == [(10, 200 / 3), (10, 100 / 3)]


@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("", "group_by is required: a label key"),
        ("?group_by=site&threshold=100", "threshold must be a percent from 0 to under 100"),
        ("?group_by=site&threshold=nan", "threshold must be a percent from 0 to under 100"),
        ("?group_by=site&start=2024-01-01T00:00:00Z&end=2024-03-01T00:00:00Z", "the window holds"),
        ("?group_by=site&start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z", "end must be after"),
    ],
)
def test_bad_site_outage_queries(client: FlaskClient, query: str, msg: str) -> None:
    reply = client.get(f"/api/v1/fleet/outages{query}")
    assert reply.status_code == 400 and reply.get_json()["msg"].startswith(msg)


def test_metrics_count_devices_by_group_and_state(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fleet_monitor.http.metrics.MAX_GROUPS", 1)
    client = create_app(Settings(metrics_group_by="site"), store, clock=clock).test_client()
    put(client, A, {"labels": {"site": "lyon"}})
    put(client, B, {"labels": {"site": "paris"}})
    put(client, C, {"labels": {"site": "rome"}})
    assert heartbeat(client, format_rfc3339(clock.now), A).status_code == 204
    text = client.get("/metrics").get_data(as_text=True)
    lines = [line for line in text.splitlines() if line.startswith("fleet_monitor_group_devices{")]
    assert 'fleet_monitor_group_devices{group="lyon",state="up"} 1.0' in lines
    assert 'fleet_monitor_group_devices{group="_other",state="new"} 2.0' in lines  # paris, rome
    assert (
        f'fleet_monitor_group_devices{{group="_none",state="new"}} {len(SAMPLE_DEVICES) - 3}.0'
        in lines
    )
    assert len(lines) == 3 * 5  # three groups, five states


def test_expectation_rules_by_label(store: Store, clock: Clock) -> None:
    rules = (ExpectationRule((("site", "paris"),), 600, 0),)
    client = create_app(Settings(expect=rules), store, clock=clock).test_client()
    put(client, A, {"labels": {"site": "paris"}})
    put(client, B, {"labels": {"site": "paris"}, "expected_every": 60})  # its own wins
    put(client, C, {"labels": {"site": "lyon"}})
    for device in (A, B, C):
        assert heartbeat(client, format_rfc3339(clock.now), device).status_code == 204
    clock.now += 300 * NS_PER_SECOND
    states = {d["device_id"]: d["state"] for d in client.get(API).get_json()["devices"]}
    assert (states[A], states[B], states[C]) == ("up", "down", "down")
    detail = client.get(f"{API}/{A}").get_json()
    assert (detail["expected_every"], detail["grace"]) == (600, 0)


def test_a_lone_surrogate_is_a_400_and_nothing_is_kept(client: FlaskClient) -> None:
    body = b'{"labels": {"site": "\\ud800"}}'
    reply = client.put(f"{API}/{A}", data=body, content_type="application/json")
    assert reply.status_code == 400
    assert reply.get_json()["msg"].startswith("request body is not valid JSON: a string holds")
    assert client.get(f"{API}/{A}").get_json()["labels"] == {}
    paired = b'{"labels": {"site": "\\ud83d\\ude00"}}'  # a pair is one character
    assert client.put(f"{API}/{A}", data=paired, content_type="application/json").status_code == 200
    assert client.get(f"{API}/{A}").get_json()["labels"] == {"site": "\U0001f600"}


def test_a_profile_cleared_through_the_api_stays_cleared(store: Store) -> None:
    client = create_app(Settings(), store).test_client()
    store.apply_file_profiles({A: Profile((("site", "file"),), from_file=True)})
    assert put(client, A, {"labels": {}}).get_json()["labels"] == {}
    assert store.apply_file_profiles({A: Profile((("site", "file"),), from_file=True)}) == 0
    assert client.get(f"{API}/{A}").get_json()["labels"] == {}


def test_the_latest_arrival_is_kept_on_every_store(store: Store, clock: Clock) -> None:
    client = create_app(Settings(), store, clock=clock).test_client()
    sent = format_rfc3339(clock.now)
    assert heartbeat(client, sent, A).status_code == 204
    clock.now -= 5 * NS_PER_SECOND  # a request stamped earlier that runs later
    assert heartbeat(client, format_rfc3339(clock.now - 60 * NS_PER_SECOND), A).status_code == 204
    detail = client.get(f"{API}/{A}").get_json()
    assert (detail["last_received_at"], detail["clock_skew_ns"]) == (sent, 0)


def test_site_outages_of_too_many_groups_are_refused(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fleet_monitor.domain.groups.MAX_SITE_CELLS", 2 * 1441)
    for device in (A, B, C):
        put(client, device, {"labels": {"serial": device}})
    reply = client.get("/api/v1/fleet/outages?group_by=serial")
    assert reply.status_code == 400
    assert reply.get_json()["msg"].startswith("site outages of over 2 groups in a window of 1440")


@pytest.mark.parametrize("body", [b"\n", b"   ", b"\r\n\t"])
def test_a_body_of_only_whitespace_is_a_400_and_registers_nothing(
    client: FlaskClient, body: bytes
) -> None:
    reply = client.put(f"{API}/new-device", data=body, content_type="application/json")
    assert reply.status_code == 400
    assert reply.get_json()["msg"].startswith("request body is not valid JSON")
    assert client.get(f"{API}/new-device").status_code == 404
    empty = client.put(f"{API}/new-device", data=b"", content_type="application/json")
    assert empty.status_code == 201  # an empty body is no body: registered, no profile
