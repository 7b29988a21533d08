"""Requests and assertions on the device API through Flask's test client."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import DEVICE

API = "/api/v1/devices"


def post(client: FlaskClient, path: str, body: Any, **kwargs: Any) -> TestResponse:
    """POST ``body`` (JSON-encoded unless already text or bytes)."""
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, **kwargs)


def heartbeat(client: FlaskClient, sent_at: str, device: str = DEVICE) -> TestResponse:
    """POST one heartbeat."""
    return post(client, f"{API}/{device}/heartbeat", {"sent_at": sent_at})


def assert_error(response: TestResponse, status: int, msg: str) -> None:
    """``response`` is a JSON error with exactly this status and ``msg``."""
    assert response.status_code == status
    assert response.content_type == "application/json"
    assert response.get_json() == {"msg": msg}
