"""The status pages through the app: what they show matches the API, filters, paging, the
device page, bad queries, and who may see what."""

from __future__ import annotations

import base64

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.readmodels import Expectations, device_view
from fleet_monitor.domain.statuspage import device_rows as rows_of
from fleet_monitor.domain.timestamps import MINUTE_NS, NS_PER_SECOND
from fleet_monitor.http.app import create_app
from fleet_monitor.store.protocol import Store
from tests.conftest import SAMPLE_DEVICES
from tests.support.api import assert_error
from tests.support.clock import Clock
from tests.support.pages import device_rows, parse_page, svgs

NOW = 28_500_000 * MINUTE_NS
A, B, C, D, E = sorted(SAMPLE_DEVICES)


@pytest.fixture
def app(store: Store) -> Flask:
    now = NOW // MINUTE_NS
    store.set_profile(A, Profile((("site", "paris"),)))
    store.set_profile(B, Profile((("site", "lyon"), ("note", "<b>&amp;</b>"))))
    # A up (every minute of 2 days but a 5-minute gap); B down 10 minutes ago; C late
    store.record_many(
        [
            (A, Heartbeat(m * MINUTE_NS))
            for m in range(now - 2880, now + 1)
            if not 100 <= now - m < 105
        ]
    )
    store.record_many([(B, Heartbeat(m * MINUTE_NS)) for m in range(now - 500, now - 10)])
    store.record_many([(C, Heartbeat((now - 1) * MINUTE_NS))])
    store.record_many(
        [(A, Upload(m * MINUTE_NS, (m % 7 + 1) * NS_PER_SECOND)) for m in range(now - 600, now, 10)]
    )
    return create_app(Settings(), store, clock=Clock(NOW + 20 * NS_PER_SECOND))


def test_the_fleet_page_shows_what_the_api_reports(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.content_type == "text/html; charset=utf-8"
    html = page.get_data(as_text=True)
    listed = client.get("/api/v1/devices").get_json()["devices"]
    assert device_rows(html) == {d["device_id"]: d["state"] for d in listed}
    assert device_rows(html) == {A: "up", B: "down", C: "late", D: "new", E: "new"}
    tree = parse_page(html)
    counts = {e.get("id"): e.text for e in tree.iter("{http://www.w3.org/1999/xhtml}strong")}
    fleet = client.get("/api/v1/fleet").get_json()
    assert counts == {
        "count-devices": str(fleet["devices"]),
        **{f"count-{name}": str(n) for name, n in fleet["states"].items()},
    }
    bars = svgs(html)
    assert len(bars) == 5 and all(len(list(bar)) == 91 for bar in bars)  # a title, 90 steps
    assert "&lt;b&gt;&amp;amp;&lt;/b&gt;" in html  # a label is text, never markup
    assert '<meta http-equiv="refresh" content="60">' in html


def test_the_fleet_page_filters_by_state_and_label_and_pages(client: FlaskClient) -> None:
    assert device_rows(client.get("/?state=new").get_data(as_text=True)) == {D: "new", E: "new"}
    assert device_rows(client.get("/?label=site:paris").get_data(as_text=True)) == {A: "up"}
    assert device_rows(client.get("/status/site:lyon").get_data(as_text=True)) == {B: "down"}
    first = client.get("/?limit=2&bar=1m&refresh=0").get_data(as_text=True)
    assert list(device_rows(first)) == [A, B]
    assert "http-equiv" not in first
    link = parse_page(first).find(".//{http://www.w3.org/1999/xhtml}a[@rel='next']")
    assert link is not None
    second = client.get(link.get("href", "")).get_data(as_text=True)
    assert list(device_rows(second)) == [C, D]
    assert "bar=1m" in link.get("href", "")


def test_the_device_page(client: FlaskClient) -> None:
    html = client.get(f"/devices/{A}?bar=1m").get_data(as_text=True)
    tree = parse_page(html)
    assert tree.find(".//*[@id='state']").text == "up"  # type: ignore[union-attr]
    assert "1 outage, 5 minutes down, the longest 5 minutes." in html
    outages = tree.find(".//*[@id='outage-list']")
    assert outages is not None
    assert [svg.get("role") for svg in svgs(html)] == ["img", "img"]  # the bar, the uploads
    assert "upload time per 1m" in html
    assert "None covers this device." in html


@pytest.mark.parametrize(
    ("path", "msg"),
    [
        ("/?state=gone", "state must be one of new, up, late, down, paused"),
        ("/?bar=2m", "bar must be one of 1m, 1h, 1d"),
        ("/?limit=0", "limit must be a whole number from 1 to 500"),
        ("/?refresh=x", "refresh must be a whole number from 1 to 3600"),
        ("/?cursor=%%%", "cursor is not one this service returned in next"),
        (
            "/?label=site",
            "label must be key:value, the key 1 to 63 characters of a-z 0-9 _ . -, "
            "starting with a letter; got 'site'",
        ),
        ("/status/site", "a group is key:value, the key a label key; got 'site'"),
        (f"/devices/{A}?bar=1y", "bar must be one of 1m, 1h, 1d"),
    ],
)
def test_bad_page_queries_are_400s(client: FlaskClient, path: str, msg: str) -> None:
    assert_error(client.get(path), 400, msg)


def test_an_unknown_device_page_is_a_404(client: FlaskClient) -> None:
    assert_error(client.get("/devices/nope"), 404, "device not found")


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()}


def test_with_a_read_token_a_browser_is_asked_for_it(store: Store) -> None:
    client = create_app(Settings(read_token="r"), store).test_client()
    refused = client.get("/")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="fleet-monitor", charset="UTF-8"'
    assert refused.get_json() == {
        "msg": "this page needs the read token: any user name, the token as password"
    }
    assert client.get("/", headers=basic("r")).status_code == 200
    assert client.get("/", headers=basic("wrong")).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer r"}).status_code == 200
    assert client.get(f"/api/v1/devices/{A}", headers=basic("r")).status_code == 200


def test_the_public_status_shows_only_what_its_selector_allows(store: Store) -> None:
    store.set_profile(A, Profile((("site", "paris"),)))
    store.set_profile(B, Profile((("site", "lyon"),)))
    settings = Settings(read_token="r", public_status=(("site", "paris"),))
    client = create_app(settings, store).test_client()
    html = client.get("/").get_data(as_text=True)
    assert device_rows(html) == {A: "new"}
    assert "public status" in html
    assert device_rows(client.get("/?label=site:lyon").get_data(as_text=True)) == {}
    assert device_rows(client.get("/status/site:lyon").get_data(as_text=True)) == {}
    assert client.get(f"/devices/{A}").status_code == 200
    assert_error(client.get(f"/devices/{B}"), 404, "device not found")
    assert client.get("/api/v1/devices").status_code == 401  # the API stays closed
    full = client.get("/", headers=basic("r")).get_data(as_text=True)
    assert len(device_rows(full)) == 5 and "public status" not in full


def test_a_silent_device_s_bar_is_red_since_its_last_heartbeat(client: FlaskClient) -> None:
    html = client.get(f"/devices/{B}?bar=1m").get_data(as_text=True)
    bar = svgs(html)[0]
    classes = [rect.get("class") for rect in bar if rect.tag.endswith("rect")]
    # minutes now-89 .. now: B sent until now-11; now-10 .. now-1 are down, now is not over
    assert classes[-11:] == ["d"] * 10 + ["n"]
    assert classes[:-11] == ["u"] * 79


def test_the_device_rows_leave_out_a_device_removed_meanwhile(store: Store) -> None:
    views = [device_view(store, device, NOW, Expectations()) for device in (A, B)]
    store.remove(A)
    assert [row.view.snapshot.device_id for row in rows_of(store, views, NOW, "1h")] == [B]


def test_the_fleet_page_spends_the_read_budget(store: Store) -> None:
    app = create_app(Settings(read_budget=200), store)
    budget = app.extensions["fleet_monitor"].reads
    client = app.test_client()
    with budget.spend(150):  # another read holds most of it: 5 rows x 93 steps do not fit
        assert_error(
            client.get("/"),
            429,
            "too many windowed reads at once: 150 steps are being computed and at most 200 may "
            "be (--read-budget); retry shortly",
        )
    assert client.get("/").status_code == 200


def test_groups_whose_values_need_encoding(store: Store) -> None:
    store.set_profile(A, Profile((("site", "x/y"),)))
    store.set_profile(B, Profile((("site", "a#b?c%"),)))
    client = create_app(Settings(), store).test_client()
    assert device_rows(client.get("/status/site:x/y").get_data(as_text=True)) == {A: "new"}
    assert 'href="/status/site:x/y"' in client.get(f"/devices/{A}").get_data(as_text=True)
    store.set_profile(C, Profile((("site", "a#b?c%"),)))
    page = client.get("/status/site:a%23b%3Fc%25?limit=1").get_data(as_text=True)
    assert device_rows(page) == {B: "new"}
    link = parse_page(page).find(".//{http://www.w3.org/1999/xhtml}a[@rel='next']")
    assert link is not None
    href = link.get("href", "")
    assert href.startswith("/status/site:a%23b%3Fc%25?")
    assert device_rows(client.get(href).get_data(as_text=True)) == {C: "new"}


def test_a_wrong_credential_is_refused_even_with_a_public_status(store: Store) -> None:
    settings = Settings(read_token="r", public_status=())
    client = create_app(settings, store).test_client()
    assert client.get("/").status_code == 200  # the public view
    assert client.get("/", headers=basic("wrong")).status_code == 401
    assert client.get("/", headers=basic("r ")).status_code == 401  # not trimmed
    assert (
        client.get(
            "/", headers={"Authorization": "Basic " + base64.b64encode(b"\xff:r").decode()}
        ).status_code
        == 200
    )


def test_badges_follow_the_public_status(store: Store) -> None:
    store.set_profile(A, Profile((("site", "paris"),)))
    settings = Settings(read_token="r", public_status=(("site", "paris"),))
    client = create_app(settings, store).test_client()
    assert client.get(f"/api/v1/devices/{A}/badge.svg").status_code == 200
    assert_error(client.get(f"/api/v1/devices/{B}/badge.svg"), 404, "device not found")
    assert client.get("/api/v1/fleet/badge.svg").status_code == 200
    assert client.get(f"/api/v1/devices/{B}/badge.svg", headers=basic("r")).status_code == 200


def test_the_form_and_links_keep_the_other_filters(client: FlaskClient) -> None:
    html = client.get("/?label=site:paris&label=note:x&refresh=0").get_data(as_text=True)
    assert '<input type="hidden" name="label" value="note:x">' in html
    assert '<input type="hidden" name="refresh" value="0">' in html
    device = client.get(f"/devices/{A}?refresh=5").get_data(as_text=True)
    assert 'href="?bar=1m&amp;refresh=5"' in device
    parse_page(html), parse_page(device)
