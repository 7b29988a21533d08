"""format_duration must print exactly what Go's time.Duration.String() prints."""

from __future__ import annotations

import pytest

from fleet_monitor.domain.durations import (
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    SECOND,
    format_duration,
)

CASES = [
    (0, "0s"),
    (1, "1ns"),
    (999, "999ns"),
    (1 * MICROSECOND, "1µs"),
    (1_500, "1.5µs"),
    (1_001, "1.001µs"),
    (999_999, "999.999µs"),
    (1 * MILLISECOND, "1ms"),
    (1_000_001, "1.000001ms"),
    (2_250_000, "2.25ms"),
    (100 * MILLISECOND, "100ms"),
    (999_999_999, "999.999999ms"),
    (1 * SECOND, "1s"),
    (1_000_000_001, "1.000000001s"),
    (1_500_000_000, "1.5s"),
    (3 * SECOND, "3s"),
    (59_999_999_999, "59.999999999s"),
    (1 * MINUTE, "1m0s"),
    (MINUTE + 1, "1m0.000000001s"),
    (90 * SECOND, "1m30s"),
    (187_893_379_134, "3m7.893379134s"),
    (199_085_533_836, "3m19.085533836s"),
    (201_858_747_766, "3m21.858747766s"),
    (197_331_667_813, "3m17.331667813s"),
    (209_226_522_788, "3m29.226522788s"),
    (HOUR - 1, "59m59.999999999s"),
    (1 * HOUR, "1h0m0s"),
    (HOUR + SECOND, "1h0m1s"),
    (2 * HOUR + 3 * MINUTE + 4 * SECOND + 5, "2h3m4.000000005s"),
    (100 * HOUR, "100h0m0s"),
    (2**63 - 1, "2562047h47m16.854775807s"),
    (-1_500, "-1.5µs"),
    (-(90 * SECOND), "-1m30s"),
]


@pytest.mark.parametrize(("nanoseconds", "expected"), CASES)
def test_formats_like_go(nanoseconds: int, expected: str) -> None:
    assert format_duration(nanoseconds) == expected


def test_micro_sign_is_u00b5() -> None:
    assert format_duration(1_500)[-2] == "\u00b5"
