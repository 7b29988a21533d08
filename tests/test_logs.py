"""The log throttle: one warning line per template and interval, with a count of the rest."""

from __future__ import annotations

import io
import json
import logging

from fleet_monitor.logs import Throttle, configure_logging


def _record(msg: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
    return logging.LogRecord("fleet_monitor.http.app", level, __file__, 1, msg, args, None)


def test_a_repeated_warning_passes_once_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    passed = [throttle.filter(_record("disk %s", logging.ERROR, n)) for n in range(5)]
    assert passed == [True, False, False, False, False]
    now[0] = 109.9
    assert throttle.filter(_record("disk %s")) is False
    now[0] = 110.0
    record = _record("disk %s", logging.ERROR, "full")
    assert throttle.filter(record) is True
    assert record.getMessage() == "disk full [5 more like this in the last 10 s]"
    assert record.fields == {"suppressed": 5}  # type: ignore[attr-defined]


def test_templates_are_throttled_apart_and_info_lines_never() -> None:
    throttle = Throttle(10.0, clock=lambda: 0.0)
    assert throttle.filter(_record("a")) and throttle.filter(_record("b"))
    assert not throttle.filter(_record("a"))
    assert all(throttle.filter(_record("access", logging.INFO)) for _ in range(100))


def test_configured_handler_throttles_a_flood_to_one_line() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, "json", stream)
    try:
        for depth in range(3844):
            logging.getLogger("waitress.queue").warning("Task queue depth is %d", depth)
    finally:
        configure_logging(logging.WARNING, "text")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["Task queue depth is 0"]


def test_a_text_line_cannot_be_split_by_what_a_client_sent() -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, "text", stream)
    try:
        logging.getLogger("fleet_monitor.access").info(
            '%s "%s %s"', "127.0.0.1", "GET", "/x\n2026-11-24T00:00:00.000Z ERROR forged\r"
        )
    finally:
        configure_logging(logging.WARNING, "text")
    [line] = stream.getvalue().splitlines()
    assert line.endswith('"GET /x\\x0a2026-11-24T00:00:00.000Z ERROR forged\\x0d"')
