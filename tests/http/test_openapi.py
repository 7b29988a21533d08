"""The OpenAPI document: valid 3.1, served, complete, and true of the app (schemathesis)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from flask import Flask
from openapi_spec_validator import validate
from schemathesis import Case
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from fleet_monitor import __version__
from fleet_monitor.config import Settings
from fleet_monitor.http.app import create_app
from fleet_monitor.http.openapi import openapi_document
from fleet_monitor.http.queries import encode_cursor
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.service import new_store
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
OUTAGES = "/api/v1/devices/{device_id}/outages"
WINDOWED = (
    "/api/v1/devices/{device_id}/uptime",
    "/api/v1/devices/{device_id}/uploads",
    OUTAGES,
    "/api/v1/fleet/outages",
)
WINDOW_RULES = ("end must be after start", "the window holds ")
MAINTENANCE = "/api/v1/maintenance"
# What a maintenance window must be beyond its fields' schemas (cross-field rules, cron syntax)
MAINTENANCE_RULES = (
    "a window needs a selector",
    "a one-off window needs",
    "duration belongs to a recurring window",
    "duration must be",  # a recurring window needs one
    "end must be after start",
    "cron ",
)
_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")

FLEET = MemoryStore(SAMPLE_DEVICES)
APP = create_app(Settings(), FLEET)
SCHEMA = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP)


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__


def test_served_document_is_the_package_yaml(client: Any) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json == openapi_document()


def _routes(app: Flask) -> set[tuple[str, str]]:
    """Every (OpenAPI path, method) the app serves, HEAD and OPTIONS aside (Flask adds them),
    the HTML status pages aside (not an API: see docs/status-pages.md)."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("pages."):
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((path, method.lower()))
    return found


def _documented() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_documented_and_every_documented_operation_exists(app: Flask) -> None:
    assert _routes(app) - _documented() == set(), "routes missing from openapi.yaml"
    assert _documented() - _routes(app) == set(), "documented operations the app lacks"


def _conform(case: Case[Any]) -> None:
    """Two rules of the wire contract that JSON Schema cannot state, applied to schema-valid
    cases: JSON Schema counts ``1.0`` as an integer, while ``upload_time`` (Go's int64) must be
    written without a fraction; and a cursor is valid only if the service made it."""
    body = case.body
    for name in ("upload_time", "expected_every", "grace"):
        value = body.get(name) if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(value, float) and value.is_integer():
            body[name] = int(value)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.query and "cursor" in case.query:
        if case.path == OUTAGES:  # a minute of the window asked for: none to make up here
            del case.query["cursor"]
        else:
            case.query["cursor"] = encode_cursor(SAMPLE_DEVICES[1])


@SCHEMA.parametrize()
def test_app_conforms_to_its_document(case: Case[Any]) -> None:
    """Every operation, schema-valid and schema-invalid cases: no 5xx, every response
    documented and matching its schema, valid data accepted and invalid data refused."""
    FLEET.add_all(SAMPLE_DEVICES)  # a generated DELETE may have removed the example device
    _conform(case)
    if case.path == "/api/v1/events":
        # Over --max-batch the issue asks for 413, which schemathesis does not count as a
        # refusal of invalid data; the 400s and the 413 have their own probes below.
        case.call_and_validate(excluded_checks=[negative_data_rejection])
        return
    if case.path == MAINTENANCE and case.method == "POST":
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        if case.meta is not None and case.meta.generation.mode.is_positive:
            message = response.json().get("msg", "") if response.status_code == 400 else ""
            assert response.status_code != 400 or message.startswith(MAINTENANCE_RULES)
        return
    if case.path not in WINDOWED:
        assert case.call_and_validate().status_code < 500
        return
    # A window's start, end and step must also make end > start and at most 10 000 steps
    # (outages: end > start), a rule across parameters that JSON Schema cannot state: such a
    # 400 is the only one allowed.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    if case.meta is not None and case.meta.generation.mode.is_positive:
        assert response.status_code != 400 or response.json()["msg"].startswith(WINDOW_RULES)


@dataclass(frozen=True)
class Probe:
    """A request known to produce one documented status."""

    method: str
    path: str
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    starting: bool = False  # sent to an app whose fleet is still loading
    settings: Settings = field(default_factory=Settings)
    repeat: int = 1  # sent this many times; the last answer counts
    before: tuple[tuple[str, str, str], ...] = ()  # (method, path, body) sent first
    windows: int = 0  # the most maintenance windows the fleet keeps, when not 0


D = f"/api/v1/devices/{DEVICE}"
HEARTBEAT = '{"sent_at": "2024-04-02T09:00:00Z"}'
UPLOAD = '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": 5}'
BIG = '{"pad": "' + "x" * 70_000 + '"}'
EVENTS = json.dumps(
    {
        "events": [
            {"device_id": DEVICE, "type": "heartbeat", "sent_at": "2024-04-02T09:00:00Z"},
            {"device_id": "x", "type": "heartbeat", "sent_at": "2024-04-02T09:00:00Z"},
        ]
    }
)
TOKENS = Settings(read_token="r-token", device_token="d-token", admin_token="a-token")
SLOW = Settings(rate_limit=1 / 3600, burst=1)
SLOW_READS = Settings(read_rate_limit=1 / 3600, burst=1)
STRICT = Settings(max_sent_at_age=60, max_devices=5)
KEY = {"Idempotency-Key": "k"}
HEARTBEAT_2 = '{"sent_at": "2024-04-02T09:05:00Z"}'
WINDOW = json.dumps(
    {"devices": [DEVICE], "start": "2024-04-02T09:00:00Z", "end": "2024-04-03T00:00:00Z"}
)
UPLOAD_2 = '{"sent_at": "2024-04-02T09:00:00Z", "upload_time": 6}'
# One probe per documented (path, method, status): each status is shown reachable.
PROBES: dict[tuple[str, str, str], Probe] = {
    ("/api/v1/devices/{device_id}/heartbeat", "post", "204"): Probe(
        "POST", D + "/heartbeat", HEARTBEAT
    ),
    ("/api/v1/devices/{device_id}/heartbeat", "post", "400"): Probe("POST", D + "/heartbeat", "{}"),
    ("/api/v1/devices/{device_id}/heartbeat", "post", "404"): Probe(
        "POST", "/api/v1/devices/x/heartbeat", HEARTBEAT
    ),
    ("/api/v1/devices/{device_id}/heartbeat", "post", "413"): Probe("POST", D + "/heartbeat", BIG),
    ("/api/v1/devices/{device_id}/heartbeat", "post", "503"): Probe(
        "POST", D + "/heartbeat", HEARTBEAT, starting=True
    ),
    ("/api/v1/devices/{device_id}/stats", "post", "204"): Probe("POST", D + "/stats", UPLOAD),
    ("/api/v1/devices/{device_id}/stats", "post", "400"): Probe("POST", D + "/stats", HEARTBEAT),
    ("/api/v1/devices/{device_id}/stats", "post", "404"): Probe(
        "POST", "/api/v1/devices/x/stats", UPLOAD
    ),
    ("/api/v1/devices/{device_id}/stats", "post", "413"): Probe("POST", D + "/stats", BIG),
    ("/api/v1/devices/{device_id}/stats", "post", "503"): Probe(
        "POST", D + "/stats", UPLOAD, starting=True
    ),
    ("/api/v1/devices/{device_id}/stats", "get", "200"): Probe("GET", D + "/stats"),
    ("/api/v1/devices/{device_id}/stats", "get", "404"): Probe("GET", "/api/v1/devices/x/stats"),
    ("/api/v1/devices/{device_id}/stats", "get", "503"): Probe("GET", D + "/stats", starting=True),
    ("/api/v1/devices", "get", "200"): Probe("GET", "/api/v1/devices?limit=2"),
    ("/api/v1/devices", "get", "400"): Probe("GET", "/api/v1/devices?limit=0"),
    ("/api/v1/devices", "get", "503"): Probe("GET", "/api/v1/devices", starting=True),
    ("/api/v1/devices/{device_id}", "get", "200"): Probe("GET", D),
    ("/api/v1/devices/{device_id}", "get", "404"): Probe("GET", "/api/v1/devices/x"),
    ("/api/v1/devices/{device_id}", "get", "503"): Probe("GET", D, starting=True),
    ("/api/v1/devices/{device_id}", "put", "200"): Probe("PUT", D),
    ("/api/v1/devices/{device_id}", "put", "201"): Probe("PUT", "/api/v1/devices/cam-07"),
    ("/api/v1/devices/{device_id}", "put", "400"): Probe("PUT", "/api/v1/devices/bad%20id"),
    ("/api/v1/devices/{device_id}", "put", "503"): Probe("PUT", D, starting=True),
    ("/api/v1/devices/{device_id}", "delete", "204"): Probe("DELETE", D),
    ("/api/v1/devices/{device_id}", "delete", "404"): Probe("DELETE", "/api/v1/devices/x"),
    ("/api/v1/devices/{device_id}", "delete", "503"): Probe("DELETE", D, starting=True),
    ("/api/v1/fleet", "get", "200"): Probe("GET", "/api/v1/fleet"),
    ("/api/v1/fleet", "get", "503"): Probe("GET", "/api/v1/fleet", starting=True),
    ("/api/v1/fleet", "get", "400"): Probe("GET", "/api/v1/fleet?group_by=Site"),
    ("/api/v1/devices/{device_id}/uptime", "get", "200"): Probe("GET", D + "/uptime"),
    ("/api/v1/devices/{device_id}/badge.svg", "get", "200"): Probe("GET", D + "/badge.svg"),
    ("/api/v1/alerts/rules", "get", "200"): Probe("GET", "/api/v1/alerts/rules"),
    ("/api/v1/alerts/rules", "get", "503"): Probe("GET", "/api/v1/alerts/rules", starting=True),
    ("/api/v1/alerts/events", "get", "200"): Probe("GET", "/api/v1/alerts/events"),
    ("/api/v1/alerts/events", "get", "400"): Probe("GET", "/api/v1/alerts/events?limit=0"),
    ("/api/v1/alerts/events", "get", "503"): Probe("GET", "/api/v1/alerts/events", starting=True),
    ("/api/v1/devices/{device_id}/badge.svg", "get", "400"): Probe(
        "GET", D + "/badge.svg?window=1y"
    ),
    ("/api/v1/devices/{device_id}/badge.svg", "get", "404"): Probe(
        "GET", "/api/v1/devices/x/badge.svg"
    ),
    ("/api/v1/devices/{device_id}/badge.svg", "get", "503"): Probe(
        "GET", D + "/badge.svg", starting=True
    ),
    ("/api/v1/fleet/badge.svg", "get", "200"): Probe("GET", "/api/v1/fleet/badge.svg?window=7d"),
    ("/api/v1/fleet/badge.svg", "get", "400"): Probe("GET", "/api/v1/fleet/badge.svg?label=x"),
    ("/api/v1/fleet/badge.svg", "get", "503"): Probe(
        "GET", "/api/v1/fleet/badge.svg", starting=True
    ),
    ("/api/v1/devices/{device_id}/uptime", "get", "400"): Probe("GET", D + "/uptime?step=2m"),
    ("/api/v1/devices/{device_id}/uptime", "get", "404"): Probe("GET", "/api/v1/devices/x/uptime"),
    ("/api/v1/devices/{device_id}/uptime", "get", "503"): Probe(
        "GET", D + "/uptime", starting=True
    ),
    ("/api/v1/devices/{device_id}/uploads", "get", "200"): Probe("GET", D + "/uploads?step=1d"),
    ("/api/v1/devices/{device_id}/uploads", "get", "400"): Probe("GET", D + "/uploads?end=x"),
    ("/api/v1/devices/{device_id}/uploads", "get", "404"): Probe(
        "GET", "/api/v1/devices/x/uploads"
    ),
    ("/api/v1/devices/{device_id}/uploads", "get", "503"): Probe(
        "GET", D + "/uploads", starting=True
    ),
    ("/api/v1/devices/{device_id}/outages", "get", "200"): Probe("GET", D + "/outages"),
    ("/api/v1/devices/{device_id}/outages", "get", "400"): Probe("GET", D + "/outages?min=0"),
    ("/api/v1/devices/{device_id}/outages", "get", "404"): Probe(
        "GET", "/api/v1/devices/x/outages"
    ),
    ("/api/v1/devices/{device_id}/outages", "get", "503"): Probe(
        "GET", D + "/outages", starting=True
    ),
    ("/api/v1/fleet/outages", "get", "200"): Probe("GET", "/api/v1/fleet/outages?group_by=site"),
    ("/api/v1/fleet/outages", "get", "400"): Probe("GET", "/api/v1/fleet/outages"),
    ("/api/v1/fleet/outages", "get", "503"): Probe(
        "GET", "/api/v1/fleet/outages?group_by=site", starting=True
    ),
    ("/api/v1/maintenance", "get", "200"): Probe("GET", "/api/v1/maintenance"),
    ("/api/v1/maintenance", "get", "503"): Probe("GET", "/api/v1/maintenance", starting=True),
    ("/api/v1/maintenance", "post", "201"): Probe("POST", "/api/v1/maintenance", WINDOW),
    ("/api/v1/maintenance", "post", "400"): Probe("POST", "/api/v1/maintenance", "{}"),
    ("/api/v1/maintenance", "post", "413"): Probe(
        "POST", "/api/v1/maintenance", WINDOW, settings=Settings(max_body_bytes=10)
    ),
    ("/api/v1/maintenance", "post", "422"): Probe(
        "POST",
        "/api/v1/maintenance",
        WINDOW,
        before=(("POST", "/api/v1/maintenance", WINDOW),),
        windows=1,
    ),
    ("/api/v1/maintenance", "post", "503"): Probe(
        "POST", "/api/v1/maintenance", WINDOW, starting=True
    ),
    ("/api/v1/maintenance/{window_id}", "delete", "204"): Probe(
        "DELETE", "/api/v1/maintenance/{created}", before=(("POST", "/api/v1/maintenance", WINDOW),)
    ),
    ("/api/v1/maintenance/{window_id}", "delete", "404"): Probe(
        "DELETE", "/api/v1/maintenance/0123456789abcdef0123456789abcdef"
    ),
    ("/api/v1/maintenance/{window_id}", "delete", "503"): Probe(
        "DELETE", "/api/v1/maintenance/0123456789abcdef0123456789abcdef", starting=True
    ),
    ("/api/v1/events", "post", "200"): Probe("POST", "/api/v1/events", EVENTS),
    ("/api/v1/events", "post", "400"): Probe("POST", "/api/v1/events", '{"events": []}'),
    ("/api/v1/events", "post", "401"): Probe("POST", "/api/v1/events", EVENTS, settings=TOKENS),
    ("/api/v1/events", "post", "413"): Probe(
        "POST", "/api/v1/events", EVENTS, settings=Settings(max_batch=1)
    ),
    ("/api/v1/events", "post", "503"): Probe("POST", "/api/v1/events", EVENTS, starting=True),
    ("/api/v1/devices/{device_id}/heartbeat", "post", "429"): Probe(
        "POST", D + "/heartbeat", HEARTBEAT, settings=SLOW, repeat=2
    ),
    ("/api/v1/devices/{device_id}/stats", "post", "429"): Probe(
        "POST", D + "/stats", UPLOAD, settings=SLOW, repeat=2
    ),
    **{
        (path, method, "401"): Probe(method.upper(), url, body, settings=TOKENS)
        for path, method, url, body in (
            ("/api/v1/devices/{device_id}/heartbeat", "post", D + "/heartbeat", HEARTBEAT),
            ("/api/v1/devices/{device_id}/stats", "post", D + "/stats", UPLOAD),
            ("/api/v1/devices/{device_id}/stats", "get", D + "/stats", None),
            ("/api/v1/devices", "get", "/api/v1/devices", None),
            ("/api/v1/devices/{device_id}", "get", D, None),
            ("/api/v1/devices/{device_id}", "put", D, None),
            ("/api/v1/devices/{device_id}", "delete", D, None),
            ("/api/v1/fleet", "get", "/api/v1/fleet", None),
            ("/api/v1/devices/{device_id}/uptime", "get", D + "/uptime", None),
            ("/api/v1/devices/{device_id}/uploads", "get", D + "/uploads", None),
            ("/api/v1/devices/{device_id}/outages", "get", D + "/outages", None),
            ("/api/v1/maintenance", "get", "/api/v1/maintenance", None),
            ("/api/v1/fleet/outages", "get", "/api/v1/fleet/outages?group_by=site", None),
            ("/api/v1/devices/{device_id}/badge.svg", "get", D + "/badge.svg", None),
            ("/api/v1/fleet/badge.svg", "get", "/api/v1/fleet/badge.svg", None),
            ("/api/v1/alerts/rules", "get", "/api/v1/alerts/rules", None),
            ("/api/v1/alerts/events", "get", "/api/v1/alerts/events", None),
            ("/api/v1/maintenance", "post", "/api/v1/maintenance", WINDOW),
            (
                "/api/v1/maintenance/{window_id}",
                "delete",
                "/api/v1/maintenance/0123456789abcdef0123456789abcdef",
                None,
            ),
        )
    },
    ("/api/v1/devices/{device_id}/heartbeat", "post", "409"): Probe(
        "POST", D + "/heartbeat", HEARTBEAT_2, KEY, before=(("POST", D + "/heartbeat", HEARTBEAT),)
    ),
    ("/api/v1/devices/{device_id}/stats", "post", "409"): Probe(
        "POST", D + "/stats", UPLOAD_2, KEY, before=(("POST", D + "/stats", UPLOAD),)
    ),
    ("/api/v1/devices/{device_id}/heartbeat", "post", "422"): Probe(
        "POST", D + "/heartbeat", HEARTBEAT, settings=STRICT
    ),
    ("/api/v1/devices/{device_id}/stats", "post", "422"): Probe(
        "POST", D + "/stats", UPLOAD, settings=STRICT
    ),
    ("/api/v1/devices/{device_id}", "put", "422"): Probe(
        "PUT", "/api/v1/devices/cam-07", settings=STRICT
    ),
    **{
        (path, "get", "429"): Probe("GET", url, settings=SLOW_READS, repeat=2)
        for path, url in (
            ("/api/v1/devices/{device_id}/stats", D + "/stats"),
            ("/api/v1/devices", "/api/v1/devices"),
            ("/api/v1/devices/{device_id}", D),
            ("/api/v1/fleet", "/api/v1/fleet"),
            ("/api/v1/devices/{device_id}/uptime", D + "/uptime"),
            ("/api/v1/devices/{device_id}/uploads", D + "/uploads"),
            ("/api/v1/devices/{device_id}/outages", D + "/outages"),
            ("/api/v1/maintenance", "/api/v1/maintenance"),
            ("/api/v1/fleet/outages", "/api/v1/fleet/outages?group_by=site"),
            ("/api/v1/devices/{device_id}/badge.svg", D + "/badge.svg"),
            ("/api/v1/fleet/badge.svg", "/api/v1/fleet/badge.svg"),
            ("/api/v1/alerts/rules", "/api/v1/alerts/rules"),
            ("/api/v1/alerts/events", "/api/v1/alerts/events"),
        )
    },
    ("/healthz", "get", "200"): Probe("GET", "/healthz"),
    ("/readyz", "get", "200"): Probe("GET", "/readyz"),
    ("/readyz", "get", "503"): Probe("GET", "/readyz", starting=True),
    ("/metrics", "get", "200"): Probe("GET", "/metrics"),
    ("/api/v1/openapi.json", "get", "200"): Probe("GET", "/api/v1/openapi.json"),
}


def test_every_documented_status_has_a_probe() -> None:
    documented = {
        (path, method, status)
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
        for status in operation["responses"]
    }
    assert set(PROBES) == documented


@pytest.mark.parametrize("key", sorted(PROBES), ids=" ".join)
def test_each_documented_status_is_reachable_and_matches_its_schema(
    key: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, method, status = key
    probe = PROBES[key]
    if probe.windows:
        monkeypatch.setattr("fleet_monitor.store.memory.MAX_WINDOWS", probe.windows)
    readiness = Readiness() if probe.starting else None
    store = new_store(probe.settings)
    store.add_all(SAMPLE_DEVICES)
    client = create_app(probe.settings, store, readiness=readiness).test_client()
    created = ""
    for method_first, path_first, body_first in probe.before:
        first = client.open(path_first, method=method_first, data=body_first, headers=probe.headers)
        created = (first.get_json(silent=True) or {}).get("id", created)
    for _ in range(probe.repeat):
        response = client.open(
            probe.path.replace("{created}", created),
            method=probe.method,
            data=probe.body,
            headers=probe.headers,
        )
    assert response.status_code == int(status), response.get_data(as_text=True)
    SCHEMA[path][method.upper()].validate_response(response)
