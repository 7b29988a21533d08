"""The device id rule."""

from __future__ import annotations

import pytest

from fleet_monitor.domain.devices import is_valid_device_id


@pytest.mark.parametrize(
    ("device_id", "valid"),
    [
        ("60-6b-44-84-dc-64", True),
        ("cam_01.site:3", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("ü", False),
    ],
)
def test_device_id_rule(device_id: str, valid: bool) -> None:
    assert is_valid_device_id(device_id) is valid
