"""Go-compatible formatting of nanosecond durations (``time.Duration.String()``)."""

from __future__ import annotations

NANOSECOND = 1
MICROSECOND = 1_000 * NANOSECOND
MILLISECOND = 1_000 * MICROSECOND
SECOND = 1_000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_SUB_SECOND_UNITS = ((MILLISECOND, "ms"), (MICROSECOND, "µs"), (NANOSECOND, "ns"))


def _with_fraction(whole: int, fraction: int, digits: int) -> str:
    """``whole`` plus ``fraction`` (``digits`` wide) with trailing zeros trimmed."""
    text = str(whole)
    if fraction:
        text += "." + f"{fraction:0{digits}d}".rstrip("0")
    return text


def format_duration(nanoseconds: int) -> str:
    """Format ``nanoseconds`` exactly as Go's ``time.Duration.String()`` does.

    >>> format_duration(187_893_379_134)
    '3m7.893379134s'
    """
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value < SECOND:
        for unit, suffix in _SUB_SECOND_UNITS:
            if value >= unit:
                digits = len(str(unit)) - 1
                return sign + _with_fraction(value // unit, value % unit, digits) + suffix
    hours, rest = divmod(value, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    seconds = _with_fraction(rest // SECOND, rest % SECOND, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds
