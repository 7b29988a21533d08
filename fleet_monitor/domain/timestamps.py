"""RFC 3339 timestamps as integer nanoseconds since the Unix epoch, and UTC minute buckets.

Python's ``datetime`` stops at microseconds, so parsing is done here by hand: the wire
format allows nine fractional digits and the whole range ``0001-01-01T00:00:00Z`` to
``9999-12-31T23:59:59.999999999Z``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

NS_PER_SECOND = 1_000_000_000
MINUTE_NS = 60 * NS_PER_SECOND
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
MIN_UNIX_SECONDS = (dt.date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400
MAX_UNIX_SECONDS = (dt.date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 - 1
MIN_UNIX_NS = MIN_UNIX_SECONDS * NS_PER_SECOND  # 0001-01-01T00:00:00Z

EXPECTED_FORM = 'an RFC 3339 date-time with an offset, e.g. "2024-03-01T12:00:00Z"'

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


class TimestampError(ValueError):
    """A text that is not an RFC 3339 date-time in the supported range."""


def parse_rfc3339(text: str) -> int:
    """Return the instant ``text`` names as integer nanoseconds since 1970-01-01T00:00:00Z.

    Raises :class:`TimestampError` for anything but an RFC 3339 date-time with an explicit
    offset (``Z`` or ``±hh:mm``) whose UTC value lies in years 1 to 9999.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise TimestampError(f"is not {EXPECTED_FORM}")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    days = _unix_day(year, month, day)
    hours, minutes, seconds = int(hour), int(minute), int(second)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimestampError(f"has no such time of day: {EXPECTED_FORM} is expected")
    offset = 0
    if not zulu:
        if int(off_h) > 23 or int(off_m) > 59:
            raise TimestampError(f"has an impossible offset: {EXPECTED_FORM} is expected")
        offset = (int(off_h) * 3600 + int(off_m) * 60) * (-1 if sign == "-" else 1)
    unix = days * 86_400 + hours * 3600 + minutes * 60 + seconds - offset
    if not MIN_UNIX_SECONDS <= unix <= MAX_UNIX_SECONDS:
        raise TimestampError(
            "is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z once in UTC"
        )
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return unix * NS_PER_SECOND + nanos


@functools.lru_cache(maxsize=4096)
def _unix_day(year: str, month: str, day: str) -> int:
    """Days from 1970-01-01 to the date (its digits as sent: devices send the same few dates
    all day, so a cached one costs a dictionary look-up); raises TimestampError."""
    try:
        return dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise TimestampError(f"has no such date: {EXPECTED_FORM} is expected") from None


def minute_of(unix_ns: int) -> int:
    """The UTC minute bucket of an instant: ``floor(unix_seconds / 60)``."""
    return unix_ns // MINUTE_NS


def format_rfc3339(unix_ns: int) -> str:
    """Format an instant as RFC 3339 in UTC, with as many fractional digits as it needs."""
    seconds, nanos = divmod(unix_ns, NS_PER_SECOND)
    days, rest = divmod(seconds, 86_400)
    date = dt.date.fromordinal(days + _EPOCH_ORDINAL)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    text = f"{date.isoformat()}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


@functools.lru_cache(maxsize=16_384)
def _day_text(days: int) -> str:
    """``YYYY-MM-DD`` of the day ``days`` after 1970-01-01 (cached: windows repeat days)."""
    return dt.date.fromordinal(days + _EPOCH_ORDINAL).isoformat()


def format_minute(minute: int) -> str:
    """The start of UTC minute ``minute`` in RFC 3339: ``format_rfc3339(minute * 60 s)``,
    about 3x faster (a window's buckets format one each)."""
    days, rest = divmod(minute, 1440)
    hour, minute_of_hour = divmod(rest, 60)
    return f"{_day_text(days)}T{hour:02d}:{minute_of_hour:02d}:00Z"
