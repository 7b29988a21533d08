"""The SPEC's uptime formula."""

from __future__ import annotations

import pytest

from fleet_monitor.domain.uptime import uptime_percent


@pytest.mark.parametrize(
    ("minutes_seen", "first", "last", "uptime"),
    [
        (0, None, None, 0.0),
        (1, 5, 5, 100.0),
        (446, 0, 480, 92.91666666666667),
        (479, 0, 480, 99.79166666666667),
        (480, 0, 480, 100.0),
        (481, 0, 480, 100.0),
        (474, 0, 480, 98.75),
        (2, 0, 480, 0.4166666666666667),
        (2, 0, 1, 100.0),
    ],
)
def test_uptime_formula(
    minutes_seen: int, first: int | None, last: int | None, uptime: float
) -> None:
    assert uptime_percent(minutes_seen, first, last) == uptime
