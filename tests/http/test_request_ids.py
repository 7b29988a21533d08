"""Request ids: the client's when sane, else 32 new hex digits, different every time."""

from __future__ import annotations

import re

from fleet_monitor.http.observe import request_id


def test_new_request_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = {request_id({}) for _ in range(100_000)}
    assert len(ids) == 100_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert request_id({"HTTP_X_REQUEST_ID": "abc-1"}) == "abc-1"
    assert len(request_id({"HTTP_X_REQUEST_ID": "bad id\n"})) == 32
