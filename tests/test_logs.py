"""Logging: the throttle (one warning line per template and interval, with a count of the
rest), the line writer (lines in batches) and records made without logging's look-ups."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_monitor import logs
from fleet_monitor.http.wsgi_server import QueueLog
from fleet_monitor.logs import (
    JsonFormatter,
    LineRecord,
    LineWriter,
    TextFormatter,
    Throttle,
    configure_logging,
    held_back,
)


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


# --- the line writer: lines below WARNING in batches, the rest at once --------------------


def _writer(flush_every: float = 3600.0) -> tuple[LineWriter, io.StringIO]:
    stream = io.StringIO()
    writer = LineWriter(stream, flush_every)
    writer.setFormatter(TextFormatter())
    return writer, stream


def _wait_for(stream: io.StringIO, text: str) -> None:
    """Return once ``text`` is written to ``stream``; fail after 5 s."""
    deadline = time.monotonic() + 5
    while text not in stream.getvalue():
        assert time.monotonic() < deadline, f"{text!r} not written in 5 s"
        time.sleep(0.01)


def _line(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


def test_info_lines_wait_for_the_batch_and_a_warning_writes_them_first_in_order() -> None:
    writer, stream = _writer()
    try:
        writer.handle(_line("a", logging.INFO, "one"))
        writer.handle(_line("a", logging.INFO, "two"))
        assert stream.getvalue() == ""
        writer.handle(_line("a", logging.WARNING, "three"))
        assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == [
            "one",
            "two",
            "three",
        ]
    finally:
        writer.close()


def test_the_background_writer_writes_a_batch_within_flush_every() -> None:
    writer, stream = _writer(0.05)
    try:
        writer.handle(_line("a", logging.INFO, "soon"))
        _wait_for(stream, "soon")
    finally:
        writer.close()


def test_a_full_batch_is_written_by_the_thread_that_filled_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LineWriter, "MAX_PENDING", 3)
    writer, stream = _writer()
    try:
        for n in range(2):
            writer.handle(_line("a", logging.INFO, f"line {n}"))
        assert stream.getvalue() == ""
        writer.handle(_line("a", logging.INFO, "line 2"))
        assert len(stream.getvalue().splitlines()) == 3
    finally:
        writer.close()


def test_close_writes_what_is_left_and_stops_the_background_writer() -> None:
    writer, stream = _writer()
    writer.handle(_line("a", logging.INFO, "last words"))
    thread = writer._writer
    writer.close()
    assert stream.getvalue().endswith("a: last words\n")
    assert thread is not None and not thread.is_alive()


def test_configuring_again_closes_the_old_writer_and_keeps_its_lines() -> None:
    first = io.StringIO()
    configure_logging(logging.INFO, "text", first, flush_every=3600)
    try:
        [old] = logging.getLogger().handlers
        logging.getLogger("x").info("kept")
        configure_logging(logging.INFO, "text", io.StringIO(), flush_every=3600)
        assert first.getvalue().endswith("x: kept\n")
        assert isinstance(old, LineWriter) and not old._writer.is_alive()  # type: ignore[union-attr]
    finally:
        configure_logging(logging.WARNING, "text")


def test_a_stream_that_fails_loses_the_lines_not_the_request() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    writer = LineWriter(Broken(), 0.0)
    writer.handle(_line("a", logging.ERROR, "disk full"))  # no exception
    writer.close()


def test_lines_from_many_threads_arrive_whole_and_each_threads_in_order() -> None:
    writer, stream = _writer(0.001)
    threads, lines = 8, 2000

    def write(thread: int) -> None:
        for n in range(lines):
            writer.handle(_line("t", logging.INFO, f"{thread} {n}"))

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    writer.close()
    seen: dict[int, list[int]] = {t: [] for t in range(threads)}
    for text in stream.getvalue().splitlines():
        thread, n = text.split(": ", 1)[1].split()
        seen[int(thread)].append(int(n))
    assert seen == {t: list(range(lines)) for t in range(threads)}


# --- records made without logging's look-ups ------------------------------------------------


def test_a_line_record_formats_as_a_full_record_would() -> None:
    fields = {"status": 204, "path": '/a "b"\n', "duration_ms": 0.123, "query": None}
    made = LineRecord("fleet_monitor.access", logging.INFO, 'GET "/a"', fields)
    full = logging.LogRecord("fleet_monitor.access", logging.INFO, "", 0, 'GET "/a"', (), None)
    full.fields = fields
    full.created, full.msecs = made.created, made.msecs
    for formatter in (JsonFormatter(), TextFormatter()):
        assert formatter.format(made) == formatter.format(full)


def test_a_line_record_has_every_attribute_a_percent_format_may_name() -> None:
    every = " ".join(f"%({name})s" for name in vars(_line("a", logging.INFO, "m")))
    made = LineRecord("fleet_monitor.access", logging.INFO, "m", {})
    text = logging.Formatter(every + " %(message)s %(asctime)s").format(made)
    assert text.endswith(" m " + logging.Formatter().formatTime(made))


# --- asking the throttle before making a record ------------------------------------------


def test_a_held_back_warning_makes_no_record_and_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    configure_logging(logging.INFO, "json", stream)
    made: list[str] = []
    real = logging.Logger.makeRecord

    def counting(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    queue = QueueLog("waitress.queue")
    try:
        for depth in range(100):
            queue.warning("Task queue depth is %d", depth)
        assert made == ["waitress.queue"]
        assert held_back(queue.logger, "Task queue depth is %d")  # the 100th held back
        monkeypatch.setattr(logs._throttle, "interval", 0.0)
        queue.warning("Task queue depth is %d", 7)
    finally:
        configure_logging(logging.WARNING, "text")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["msg"], line.get("suppressed")) for line in lines] == [
        ("Task queue depth is 0", None),
        ("Task queue depth is 7 [100 more like this in the last 0 s]", 100),
    ]


def test_nothing_is_held_back_before_logging_is_configured_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "_throttle", None)
    assert not held_back(logging.getLogger("waitress.queue"), "Task queue depth is %d")


class _Message:
    """A lazy message that says which thread made its text."""

    def __init__(self, text: str, fails: bool = False) -> None:
        self.text, self.fails, self.made_by = text, fails, 0

    def __str__(self) -> str:
        if self.fails:
            raise RuntimeError("cannot be said")
        self.made_by = threading.get_ident()
        return self.text


def test_a_line_record_is_formatted_by_the_writing_thread_in_its_place() -> None:
    writer, stream = _writer()
    message = _Message("access")
    try:
        writer.handle(LineRecord("fleet_monitor.access", logging.INFO, message, {}))
        writer.handle(_line("a", logging.INFO, "after"))
        assert message.made_by == 0  # not by the thread that handed it over
        flusher = threading.Thread(target=writer.flush)
        flusher.start()
        flusher.join()
        assert message.made_by == flusher.ident
        assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == [
            "access",
            "after",
        ]
    finally:
        writer.close()


def test_a_line_record_that_cannot_be_formatted_is_reported_and_the_rest_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    writer, stream = _writer()
    writer.handle(LineRecord("fleet_monitor.access", logging.INFO, _Message("", fails=True), {}))
    writer.handle(_line("a", logging.INFO, "kept"))
    writer.close()
    assert stream.getvalue().endswith("a: kept\n") and len(stream.getvalue().splitlines()) == 1
    assert "RuntimeError: cannot be said" in capsys.readouterr().err


def test_a_line_waits_for_its_batch_then_the_writer_writes_it() -> None:
    writer, stream = _writer(0.5)
    try:
        writer.handle(_line("a", logging.INFO, "waits"))
        assert stream.getvalue() == ""
        _wait_for(stream, "waits")
    finally:
        writer.close()


def test_a_batch_is_written_in_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return super().write(text)

    stream = Writes()
    writer = LineWriter(stream, 3600)
    writer.setFormatter(TextFormatter())
    for n in range(500):
        writer.handle(_line("a", logging.INFO, f"line {n:03d} " + "x" * 90))
    writer.close()
    assert len(stream.calls) > 1
    assert all(
        len(call.encode()) <= select.PIPE_BUF and call.endswith("\n") for call in stream.calls
    )
    assert "".join(stream.calls).count("\n") == 500


def test_waiting_lines_are_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LineWriter, "MAX_PENDING_BYTES", 10_000)
    writer, stream = _writer()
    try:
        writer.handle(LineRecord("fleet_monitor.access", logging.INFO, "one", {}, 6_000))
        assert stream.getvalue() == ""
        writer.handle(LineRecord("fleet_monitor.access", logging.INFO, "two", {}, 6_000))
        assert len(stream.getvalue().splitlines()) == 2  # written by the thread past the bound
    finally:
        writer.close()


def test_after_close_a_line_is_written_at_once() -> None:
    writer, stream = _writer()
    writer.close()
    writer.handle(_line("a", logging.INFO, "late"))
    assert stream.getvalue().endswith("a: late\n")


def test_a_forked_child_writes_its_lines_at_once(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as stream:
        writer = LineWriter(stream, 3600)
        writer.setFormatter(TextFormatter())
        pid = os.fork()
        if pid == 0:  # the child: no writer thread was forked with it
            writer.handle(_line("child", logging.INFO, "from the child"))
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        writer.close()
    assert status == 0
    assert (tmp_path / "log").read_text().endswith("child: from the child\n")


def test_configuring_leaves_handlers_it_did_not_install_open() -> None:
    class Other(logging.Handler):
        closed = False

        def emit(self, record: logging.LogRecord) -> None:
            pass

        def close(self) -> None:
            self.closed = True
            super().close()

    other = Other()
    logging.getLogger().addHandler(other)
    try:
        configure_logging(logging.INFO, "text", io.StringIO())
        assert other not in logging.getLogger().handlers
        assert not other.closed
    finally:
        configure_logging(logging.WARNING, "text")


# --- lines queued without a record (defer_line) -------------------------------------------


class _Deferring:
    """``logger`` (``defer_test.access``) whose records go only to ``writer`` (a batching
    :class:`LineWriter` on its parent). The two loggers are made apart from logging's tree,
    so that pytest's capturing handlers never join them."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.parent = logging.Logger("defer_test", logging.INFO)
        self.logger = logging.Logger("defer_test.access")
        self.logger.parent = self.parent
        self.stream = io.StringIO()
        self.writer = LineWriter(self.stream, 3600.0)
        self.writer.setFormatter(formatter)
        self.writer.addFilter(Throttle())
        self.parent.addHandler(self.writer)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def deferring() -> Iterator[_Deferring]:
    setup = _Deferring(TextFormatter())
    yield setup
    setup.close()


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_a_deferred_line_is_the_line_its_record_gives_stamped_when_it_was_queued(
    monkeypatch: pytest.MonkeyPatch, formatter: logging.Formatter
) -> None:
    setup = _Deferring(formatter)
    try:
        fields = {"status": 204, "path": '/a "b"\n', "duration_ms": 0.123, "query": None}
        message = _Message('GET "/a\n"')
        monkeypatch.setattr(time, "time", lambda: 1_700_000_000.9876)
        assert logs.defer_line(setup.logger, logging.INFO, message, fields, 300)
        monkeypatch.setattr(time, "time", lambda: 1_700_000_005.0)
        record = LineRecord(
            setup.logger.name, logging.INFO, 'GET "/a\n"', fields, created=1_700_000_000.9876
        )
        assert setup.lines() == []  # it waits for its batch
        flusher = threading.Thread(target=setup.writer.flush)
        flusher.start()
        flusher.join()
        assert message.made_by == flusher.ident  # its message made by the writing thread
        assert setup.lines() == [formatter.format(record)]
        assert "2023-11-14T22:13:20.987Z" in setup.lines()[0]
    finally:
        setup.close()


def test_deferred_lines_keep_their_place_among_records(deferring: _Deferring) -> None:
    assert logs.defer_line(deferring.logger, logging.INFO, "one", {})
    deferring.writer.handle(_line("defer_test.access", logging.INFO, "two"))
    assert logs.defer_line(deferring.logger, logging.INFO, "three", {})
    assert deferring.lines() == []
    deferring.writer.handle(_line("defer_test.access", logging.WARNING, "four"))
    assert [line.split(": ", 1)[1] for line in deferring.lines()] == [
        "one",
        "two",
        "three",
        "four",
    ]


def _other_handler(setup: _Deferring) -> None:
    setup.logger.addHandler(logging.NullHandler())


def _a_filter(setup: _Deferring) -> None:
    setup.logger.addFilter(lambda record: True)


def _disabled(setup: _Deferring) -> None:
    setup.logger.disabled = True


def _writer_filter(setup: _Deferring) -> None:
    setup.writer.addFilter(lambda record: True)


def _plain_formatter(setup: _Deferring) -> None:
    setup.writer.setFormatter(logging.Formatter())


def _not_batching(setup: _Deferring) -> None:
    setup.writer.close()  # a closed writer writes each line at once


def _no_handler(setup: _Deferring) -> None:
    setup.logger.propagate = False  # logging's last resort would get it


@pytest.mark.parametrize(
    "change",
    [
        _other_handler,
        _a_filter,
        _disabled,
        _writer_filter,
        _plain_formatter,
        _not_batching,
        _no_handler,
    ],
)
def test_nothing_is_deferred_where_logging_would_do_more_than_queue_it(
    deferring: _Deferring, change: Any
) -> None:
    change(deferring)
    assert not logs.defer_line(deferring.logger, logging.INFO, "kept for logging", {})
    deferring.writer.flush()
    assert "kept for logging" not in deferring.stream.getvalue()


def test_warnings_are_never_deferred(deferring: _Deferring) -> None:
    assert not logs.defer_line(deferring.logger, logging.WARNING, "at once", {})
    assert not logs.defer_line(deferring.logger, logging.ERROR, "at once", {})


def test_a_deferred_line_that_cannot_be_formatted_is_reported_and_the_rest_written(
    deferring: _Deferring, capsys: pytest.CaptureFixture[str]
) -> None:
    assert logs.defer_line(deferring.logger, logging.INFO, _Message("", fails=True), {})
    assert logs.defer_line(deferring.logger, logging.INFO, "kept", {})
    deferring.writer.flush()
    assert [line.split(": ", 1)[1] for line in deferring.lines()] == ["kept"]
    assert "RuntimeError: cannot be said" in capsys.readouterr().err


def _recording(
    logger: logging.Logger, handed: list[logging.LogRecord]
) -> Callable[[logging.LogRecord], None]:
    """``logger.handle``, noting each record it is given in ``handed``."""
    handle = logger.handle

    def recording(record: logging.LogRecord) -> None:
        handed.append(record)
        handle(record)

    return recording


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_the_service_access_line_is_the_same_deferred_or_handed_over(
    monkeypatch: pytest.MonkeyPatch, formatter: logging.Formatter
) -> None:
    from fleet_monitor.http import observe  # noqa: PLC0415 - the access line's own module

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.5)
    lines: dict[str, str] = {}
    handed: dict[str, list[logging.LogRecord]] = {}
    for way in ("deferred", "record"):
        setup = _Deferring(formatter)
        if way == "record":
            setup.writer.addFilter(lambda record: True)  # a filter of its own: no deferring
        handed[way] = []
        monkeypatch.setattr(setup.logger, "handle", _recording(setup.logger, handed[way]))
        monkeypatch.setattr(observe, "access_log", setup.logger)
        observe.log_access(
            method="GET",
            path="/api/v1/devices/d\u00e9v%0a\n/stats",
            query="token=secret&x=1",
            route="/api/v1/devices/<device_id>/stats",
            status=200,
            seconds=0.0012345,
            remote="10.0.0.1",
            rid="r-1",
        )
        assert len(setup.writer._pending) == 1  # queued for the batch either way
        setup.close()
        lines[way] = setup.stream.getvalue()
    assert handed["deferred"] == []  # no record went through logging
    assert [type(record) for record in handed["record"]] == [LineRecord]
    assert lines["deferred"] == lines["record"]
    assert "token=REDACTED&x=1" in lines["deferred"]


def test_a_writer_above_info_gets_no_deferred_line(deferring: _Deferring) -> None:
    deferring.writer.setLevel(logging.WARNING)
    assert not logs.defer_line(deferring.logger, logging.INFO, "not for it", {})


def test_a_writer_on_the_logger_itself_takes_deferred_lines() -> None:
    stream = io.StringIO()
    writer = LineWriter(stream, 3600.0)
    writer.setFormatter(TextFormatter())
    alone = logging.Logger("alone", logging.INFO)
    alone.addHandler(writer)
    alone.propagate = False
    try:
        assert logs.defer_line(alone, logging.INFO, "mine", {})
    finally:
        writer.close()
    assert stream.getvalue().endswith(" INFO alone: mine\n")


def test_deferred_lines_fill_a_batch_like_records(
    deferring: _Deferring, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deferring.writer, "MAX_PENDING", 3)
    for n in range(2):
        assert logs.defer_line(deferring.logger, logging.INFO, f"line {n}", {})
    assert deferring.lines() == []
    assert logs.defer_line(deferring.logger, logging.INFO, "line 2", {})
    assert len(deferring.lines()) == 3  # the third filled it: written by its thread


def test_a_deferred_line_outlives_a_formatter_changed_before_its_batch(
    deferring: _Deferring,
) -> None:
    assert logs.defer_line(deferring.logger, logging.INFO, "queued", {})
    deferring.writer.setFormatter(logging.Formatter("%(name)s %(message)s"))
    deferring.writer.flush()
    assert deferring.lines() == ["defer_test.access queued"]


def test_a_line_queued_while_the_writer_closes_is_still_written(
    deferring: _Deferring, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = deferring.writer
    checked = writer._batches

    def closes_meanwhile() -> bool:
        batches = checked()
        writer.close()  # between the check and the append
        return batches

    monkeypatch.setattr(writer, "_batches", closes_meanwhile)
    assert logs.defer_line(deferring.logger, logging.INFO, "late", {})
    assert deferring.lines()[-1].endswith("defer_test.access: late")
