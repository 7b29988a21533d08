"""Uptime badges: the SVG, its figures and colours, its windows, caching, and access."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.badges import Badge, colour_of, text_width, uptime_text
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.timestamps import MINUTE_NS
from fleet_monitor.http.app import create_app
from fleet_monitor.store.protocol import Store
from tests.conftest import SAMPLE_DEVICES
from tests.support.api import API, assert_error
from tests.support.clock import Clock

NOW = 28_500_000 * MINUTE_NS
A, B, C, D, E = sorted(SAMPLE_DEVICES)
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def app(store: Store) -> Flask:
    return create_app(Settings(), store, clock=Clock(NOW + 30 * 10**9))


def parsed(response: object) -> tuple[str, str, str]:
    """The badge's label, message and message colour, from the SVG."""
    root = ET.fromstring(response.get_data())  # type: ignore[attr-defined]
    label, message = (t.text or "" for t in root.iter(f"{SVG_NS}text"))
    colour = next(r.get("fill") for r in root.iter(f"{SVG_NS}rect") if r.get("x"))
    assert root.get("aria-label") == f"{label}: {message}"
    assert root.findtext(f"{SVG_NS}title") == f"{label}: {message}"
    return label, message, colour or ""


def test_a_device_badge_shows_its_uptime_over_the_window(client: FlaskClient, store: Store) -> None:
    now = NOW // MINUTE_NS
    # every minute of the last 2 days but 3 in the last 24 h: 1437 of 1440
    gaps = {now - 10, now - 20, now - 30}
    store.record_many(
        [(A, Heartbeat(m * MINUTE_NS)) for m in range(now - 2880, now) if m not in gaps]
    )
    response = client.get(f"{API}/{A}/badge.svg")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert response.headers["Cache-Control"] == "max-age=60"
    assert parsed(response) == ("uptime 24h", "99.79%", "#97ca00")  # 1437 / 1440 = 99.7916…
    assert parsed(client.get(f"{API}/{A}/badge.svg?window=7d")) == (
        "uptime 7d",
        "99.90%",  # 2877 / 2880 = 99.8958…, from the first heartbeat
        "#97ca00",
    )
    assert parsed(client.get(f"{API}/{A}/badge.svg?window=all")) == (
        "uptime all",
        "99.93%",  # the SPEC's: 2877 / (last - first = 2879)
        "#4c1",
    )
    assert parsed(client.get(f"{API}/{B}/badge.svg")) == ("uptime 24h", "no data", "#9f9f9f")


def test_the_fleet_badge_and_its_selector(client: FlaskClient, store: Store) -> None:
    now = NOW // MINUTE_NS
    store.set_profile(A, Profile((("site", "paris"),)))
    store.record_many([(A, Heartbeat(m * MINUTE_NS)) for m in range(now - 100, now)])
    store.record_many([(B, Heartbeat(m * MINUTE_NS)) for m in range(now - 100, now, 4)])
    assert parsed(client.get("/api/v1/fleet/badge.svg")) == ("uptime 24h", "62.50%", "#e05d44")
    assert parsed(client.get("/api/v1/fleet/badge.svg?window=all")) == (
        "uptime all",
        "63.02%",  # the mean of the SPEC's: A 100 (capped), B 25 / 96
        "#e05d44",
    )
    assert parsed(client.get("/api/v1/fleet/badge.svg?label=site:paris")) == (
        "uptime 24h",
        "100%",
        "#4c1",
    )
    assert parsed(client.get("/api/v1/fleet/badge.svg?label=site:nowhere")) == (
        "uptime 24h",
        "no data",
        "#9f9f9f",
    )


def test_bad_badge_queries(client: FlaskClient) -> None:
    assert_error(
        client.get(f"{API}/{A}/badge.svg?window=1y"),
        400,
        "window must be one of 24h, 7d, 30d, all",
    )
    assert_error(client.get(f"{API}/nope/badge.svg"), 404, "device not found")
    assert client.get("/api/v1/fleet/badge.svg?window=").status_code == 400


def test_badges_need_the_read_token_when_tokens_are_on(store: Store) -> None:
    client = create_app(Settings(read_token="r"), store).test_client()
    assert client.get(f"{API}/{A}/badge.svg").status_code == 401
    assert client.get("/api/v1/fleet/badge.svg").status_code == 401
    ok = client.get(f"{API}/{A}/badge.svg", headers={"Authorization": "Bearer r"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("percent", "colour"),
    [
        (100.0, "#4c1"),
        (99.9, "#4c1"),
        (99.89, "#97ca00"),
        (99.0, "#97ca00"),
        (98.99, "#a4a61d"),
        (97.0, "#a4a61d"),
        (95.0, "#dfb317"),
        (90.0, "#fe7d37"),
        (89.99, "#e05d44"),
        (0.0, "#e05d44"),
        (None, "#9f9f9f"),
    ],
)
def test_colours_by_threshold(percent: float | None, colour: str) -> None:
    assert colour_of(percent) == colour


def test_uptime_text_never_rounds_up_to_100() -> None:
    assert [uptime_text(p) for p in (100.0, 99.999, 50.0, 18.4, 18.396, 0.0, None)] == [
        "100%",
        "99.99%",
        "50.00%",
        "18.40%",
        "18.40%",
        "0.00%",
        "no data",
    ]


def test_badge_widths() -> None:
    badge = Badge("uptime 24h", "99.79%", "#4c1")
    assert (text_width("ab"), text_width("il"), text_width("%m")) == (14, 8, 20)
    assert (badge.label_width, badge.message_width, badge.width) == (
        text_width("uptime 24h") + 12,
        text_width("99.79%") + 12,
        text_width("uptime 24h") + text_width("99.79%") + 24,
    )
