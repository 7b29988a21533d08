"""The fast path for device writes answers exactly as the Flask views do, errors included."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import pytest
from flask import Flask

from fleet_monitor.config import Settings
from fleet_monitor.http.app import METRICS_EXTENSION, create_app
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.http.timing import STARTED
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES

HEARTBEAT = f"/api/v1/devices/{DEVICE}/heartbeat"
STATS = f"/api/v1/devices/{DEVICE}/stats"
GOOD_BEAT = b'{"sent_at": "2024-04-02T09:00:00Z"}'
GOOD_UPLOAD = b'{"sent_at": "2024-04-02T09:00:00Z", "upload_time": 7}'


def environ(path: str, body: bytes, **extra: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "6733",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        **extra,
    }


def call(app: Any, env: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    """Call a WSGI app; return its status line, headers and body."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)

    chunks: Iterable[bytes] = app(env, start_response)
    body = b"".join(chunks)
    return seen["status"], seen["headers"], body


def flask_only(app: Flask) -> Any:
    """The same app without the fast path: Flask's own WSGI callable."""

    def wsgi(env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        env[STARTED] = 0
        return Flask.wsgi_app(app, env, start_response)

    return wsgi


@pytest.mark.parametrize(("path", "body"), [(HEARTBEAT, GOOD_BEAT), (STATS, GOOD_UPLOAD)])
def test_the_fast_reply_is_the_flask_reply(path: str, body: bytes) -> None:
    fast_app = create_app(Settings(), MemoryStore(SAMPLE_DEVICES))
    slow_app = create_app(Settings(), MemoryStore(SAMPLE_DEVICES))
    env = environ(path, body, HTTP_X_REQUEST_ID="r-1")
    fast = call(fast_app, env)
    slow = call(flask_only(slow_app), environ(path, body, HTTP_X_REQUEST_ID="r-1"))
    assert fast == slow == ("204 NO CONTENT", {"X-Request-ID": "r-1"}, b"")
    assert env[STARTED] > 0  # stamped by the fast path, for the access line


@pytest.mark.parametrize(
    ("env", "status", "msg"),
    [
        (environ(HEARTBEAT, b"{}"), "400 BAD REQUEST", "sent_at is required"),
        (environ(HEARTBEAT, b"nope"), "400 BAD REQUEST", "request body is not valid JSON"),
        (environ(STATS, GOOD_BEAT), "400 BAD REQUEST", "upload_time is required"),
        (
            environ(HEARTBEAT, GOOD_BEAT, HTTP_IDEMPOTENCY_KEY="a b"),
            "400 BAD REQUEST",
            "Idempotency-Key must be",
        ),
        (environ("/api/v1/devices/nope/heartbeat", GOOD_BEAT), "404 NOT FOUND", "device not"),
        (
            environ(HEARTBEAT, b"{" + b" " * 70_000 + b"}"),
            "413 REQUEST ENTITY TOO LARGE",
            "request body is larger",
        ),
    ],
)
def test_every_failure_is_answered_as_flask_answers_it(
    env: dict[str, Any], status: str, msg: str
) -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    app = create_app(Settings(), store)
    body = env["wsgi.input"].getvalue()
    env["HTTP_X_REQUEST_ID"] = "r-1"
    got_status, headers, reply = call(app, env)
    assert got_status == status
    assert headers["Content-Type"] == "application/json"
    assert json.loads(reply)["msg"].startswith(msg)
    assert store.snapshot(DEVICE).uptime == 0.0  # nothing stored
    text = app.extensions[METRICS_EXTENSION].exposition().decode()
    assert "fleet_monitor_heartbeats_total 0.0" in text
    assert "fleet_monitor_uploads_total 0.0" in text
    flask_env = {**env, "wsgi.input": io.BytesIO(body)}
    assert call(flask_only(create_app(Settings(), MemoryStore(SAMPLE_DEVICES))), flask_env) == (
        got_status,
        headers,
        reply,
    )


def test_a_body_without_content_length_goes_to_flask() -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    app = create_app(Settings(), store)
    env = environ(HEARTBEAT, GOOD_BEAT, HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    env["wsgi.input_terminated"] = True
    status, _, _ = call(app, env)
    assert status == "204 NO CONTENT"
    assert store.snapshot(DEVICE).uptime == 100.0


def test_while_loading_the_fast_path_stands_aside() -> None:
    app = create_app(Settings(), MemoryStore(SAMPLE_DEVICES), readiness=Readiness())
    status, headers, _ = call(app, environ(HEARTBEAT, GOOD_BEAT))
    assert (status, headers["Retry-After"]) == ("503 SERVICE UNAVAILABLE", "1")


def test_fast_answers_count_and_log_like_flask_answers() -> None:
    app = create_app(Settings(), MemoryStore(SAMPLE_DEVICES))
    call(app, environ(HEARTBEAT, GOOD_BEAT))  # fast
    call(app, environ(HEARTBEAT, GOOD_BEAT))  # fast, same minute
    call(app, environ(STATS, GOOD_UPLOAD))  # fast
    call(flask_only(app), environ(HEARTBEAT, GOOD_BEAT))  # Flask, same minute
    metrics = app.extensions[METRICS_EXTENSION]
    text = metrics.exposition().decode()
    route = "/api/v1/devices/<device_id>/heartbeat"
    assert f'http_requests_total{{method="POST",route="{route}",status="204"}} 3.0' in text
    assert "fleet_monitor_heartbeats_total 3.0" in text
    assert "fleet_monitor_heartbeat_duplicates_total 2.0" in text
    assert "fleet_monitor_uploads_total 1.0" in text


def test_a_query_string_or_a_get_does_not_confuse_it() -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    app = create_app(Settings(), store)
    status, _, _ = call(app, environ(HEARTBEAT, GOOD_BEAT, QUERY_STRING="x=1"))
    assert status == "204 NO CONTENT"
    status, _, body = call(app, {**environ(STATS, b""), "REQUEST_METHOD": "GET"})
    assert (status, json.loads(body)) == (
        "200 OK",
        {"uptime": 100.0, "avg_upload_time": "0s"},
    )
