"""RFC 3339 parsing to integer nanoseconds, minute buckets and formatting."""

from __future__ import annotations

import pytest

from fleet_monitor.domain.timestamps import (
    TimestampError,
    format_minute,
    format_rfc3339,
    minute_of,
    parse_rfc3339,
)

NS = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "unix_ns"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2024-03-01T12:00:00Z", 1_709_294_400 * NS),
        ("2024-03-01T12:00:00.123456789Z", 1_709_294_400 * NS + 123_456_789),
        ("2024-03-01T12:00:00.5Z", 1_709_294_400 * NS + 500_000_000),
        ("2024-03-01T14:00:00+02:00", 1_709_294_400 * NS),
        ("2024-03-01T06:30:00-05:30", 1_709_294_400 * NS),
        ("2024-03-01t12:00:00z", 1_709_294_400 * NS),
        ("2024-02-29T00:00:00Z", 1_709_164_800 * NS),
        ("0001-01-01T00:00:00Z", -62_135_596_800 * NS),
        ("0001-01-01T01:00:00+01:00", -62_135_596_800 * NS),
        ("9999-12-31T23:59:59.999999999Z", 253_402_300_799 * NS + 999_999_999),
        ("9999-12-31T22:59:59-01:00", 253_402_300_799 * NS),
    ],
)
def test_parses(text: str, unix_ns: int) -> None:
    assert parse_rfc3339(text) == unix_ns


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2024-03-01T12:00:00", "is not an RFC 3339"),
        ("2024-03-01 12:00:00Z", "is not an RFC 3339"),
        ("2024-03-01T12:00Z", "is not an RFC 3339"),
        ("2024-03-01", "is not an RFC 3339"),
        ("2024-03-01T12:00:00.Z", "is not an RFC 3339"),
        ("2024-03-01T12:00:00.1234567890Z", "is not an RFC 3339"),
        ("2024-03-01T12:00:00+0200", "is not an RFC 3339"),
        ("2024-03-01T12:00:00+02", "is not an RFC 3339"),
        (" 2024-03-01T12:00:00Z", "is not an RFC 3339"),
        ("2024-03-01T12:00:00Z ", "is not an RFC 3339"),
        ("٢٠٢٤-03-01T12:00:00Z", "is not an RFC 3339"),
        ("", "is not an RFC 3339"),
        ("2023-02-29T00:00:00Z", "has no such date"),
        ("2023-02-29T24:00:00Z", "has no such date"),  # the date is named first
        ("2024-13-01T00:00:00Z", "has no such date"),
        ("0000-12-31T23:59:59Z", "has no such date"),
        ("2024-03-01T24:00:00Z", "has no such time of day"),
        ("2024-03-01T12:60:00Z", "has no such time of day"),
        ("2024-03-01T12:00:60Z", "has no such time of day"),
        ("2024-03-01T12:00:00+24:00", "has an impossible offset"),
        ("2024-03-01T12:00:00+01:60", "has an impossible offset"),
        ("0001-01-01T00:00:00+01:00", "is outside"),
        ("9999-12-31T23:59:59-00:01", "is outside"),
    ],
)
def test_rejects(text: str, reason: str) -> None:
    with pytest.raises(TimestampError, match=reason):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    ("text", "minute"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:59.999999999Z", 0),
        ("1970-01-01T00:01:00Z", 1),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("1969-12-31T23:59:00Z", -1),
        ("0001-01-01T00:00:00Z", -1_035_593_280),
        ("2024-04-02T09:00:00Z", 28_534_140),
        ("2024-04-02T11:00:30+02:00", 28_534_140),
    ],
)
def test_minute_bucket_is_floor_of_utc_seconds(text: str, minute: int) -> None:
    assert minute_of(parse_rfc3339(text)) == minute


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999999999Z",
        "2024-03-01T12:00:00.1Z",
        "2024-03-01T12:00:00.123456789Z",
        "9999-12-31T23:59:59.999999999Z",
    ],
)
def test_format_round_trips(text: str) -> None:
    assert format_rfc3339(parse_rfc3339(text)) == text


def test_format_is_utc() -> None:
    assert format_rfc3339(parse_rfc3339("2024-03-01T14:00:00+02:00")) == "2024-03-01T12:00:00Z"


@pytest.mark.parametrize(
    "minute",
    [0, 1, 59, 60, 1439, 1440, -1, -1440, 28_533_600, -(719_162 * 1440), 2_932_896 * 1440 - 1],
)
def test_format_minute_is_format_rfc3339_of_the_minute(minute: int) -> None:
    assert format_minute(minute) == format_rfc3339(minute * 60 * 10**9)
