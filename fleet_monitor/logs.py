"""Logging to stderr: one line per event, as text or as JSON objects."""

from __future__ import annotations

import json
import logging
import math
import os
import select
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TextIO

ACCESS_LOGGER = "fleet_monitor.access"
# C0 control characters and DEL, written as \xNN in text lines (a URL may carry %0a).
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(32), 127)}
THROTTLE_SECONDS = 10.0
FLUSH_SECONDS = 0.2  # how long an access line may wait before it is written


_second_cache: tuple[int, str] = (-1, "")


def _utc_time(created: float) -> str:
    """``created`` (Unix seconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``, milliseconds cut as
    :class:`logging.LogRecord` cuts its ``msecs``."""
    global _second_cache  # noqa: PLW0603 - one formatted second, reused by every line in it
    second = int(created)
    cached_second, text = _second_cache
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    return f"{text}.{int((created - second) * 1000):03d}Z"


_PID = os.getpid()  # logging's own look-up per record is turned off (speed)
# One encoder for every line: json.dumps(..., ensure_ascii=False) builds a new one each call.
_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


class LineRecord(logging.LogRecord):
    """A record made for a line a request writes (the access line): only what a formatter
    reads is computed.

    ``logging.Logger.info`` makes a full :class:`logging.LogRecord` (the caller's file and
    module, the thread's and process's names): work no line of the service shows. The other
    attributes are there, empty, so any formatter can still format the record. Pass it to
    :meth:`logging.Logger.handle` once the logger is known to be enabled for ``level``.
    ``msg`` is any object whose ``str()`` is the message, made when the line is formatted;
    neither it nor ``fields`` may change once handed over (:class:`LineWriter` formats later).
    ``size`` says about how many bytes the line takes; ``created`` is now unless given.
    """

    def __init__(
        self,
        name: str,
        level: int,
        msg: object,
        fields: dict[str, Any],
        size: int = 256,
        *,
        created: float | None = None,
    ) -> None:
        # No super().__init__(): that is the work this class exists to skip.
        created = time.time() if created is None else created
        self.__dict__.update(_EMPTY_RECORD)  # formatters read __dict__, not the class
        self.size = size  # about how many bytes its line takes (a bound on waiting lines)
        self.name, self.msg, self.fields = name, msg, fields
        self.levelno, self.levelname = level, logging.getLevelName(level)
        self.created, self.msecs = created, int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]


_EMPTY_RECORD: dict[str, object] = {
    **dict.fromkeys(("pathname", "filename", "module"), ""),
    **dict.fromkeys(("exc_info", "exc_text", "stack_info", "funcName"), None),
    **dict.fromkeys(("thread", "threadName", "process", "processName", "taskName"), None),
    "lineno": 0,
    "args": (),
}


class LineFormatter(logging.Formatter):
    """Formats a record, or a line from its parts without one (:func:`defer_line`)."""

    def format(self, record: logging.LogRecord) -> str:
        """``record``'s line, with its traceback if any."""
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "fields", {}),
            exception=self.formatException(record.exc_info) if record.exc_info else None,
        )

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        *,
        exception: str | None = None,
    ) -> str:
        """The line of an event at ``created`` (Unix seconds), with its traceback if any."""
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    """One JSON object a line: time, level, logger, msg, pid (which worker of ``--workers``),
    then the record's ``fields``; a traceback as ``exception``."""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        *,
        exception: str | None = None,
    ) -> str:
        """The event as one JSON object."""
        line: dict[str, Any] = {
            "time": _utc_time(created),
            "level": levelname.lower(),
            "logger": name,
            "msg": message,
            "pid": _PID,
        }
        line.update(fields)
        if exception:
            line["exception"] = exception
        return _JSON.encode(line)


class TextFormatter(LineFormatter):
    """``<UTC time> <LEVEL> <logger>: <message>``, the traceback on following lines."""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        *,
        exception: str | None = None,
    ) -> str:
        """The event's text line (control characters written as ``\\xNN``), then its
        traceback."""
        if not message.isprintable():  # one event, one line: no forging
            message = message.translate(_CONTROLS)
        text = f"{_utc_time(created)} {levelname} {name}: {message}"
        return f"{text}\n{exception}" if exception else text


class Throttle(logging.Filter):
    """Lets a warning or error through at most once per ``interval`` seconds per message
    template (logger and unformatted message); the next one let through says how many were
    held back. Lower levels (the access lines) always pass.

    A full disk or an overloaded queue then costs one line every ``interval`` seconds,
    not one per request.
    """

    _MAX_TEMPLATES = 1024  # templates come from code, so this is never reached in practice

    def __init__(
        self, interval: float = THROTTLE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (when passed, held back)

    def holds_back(self, name: str, msg: str) -> bool:
        """Whether a warning of template ``msg`` from logger ``name`` would be held back now;
        if so, it is counted as held back. A caller on a hot path asks first and skips making
        a record that would only be dropped."""
        with self._lock:
            return self._held((name, msg), self._clock()) is None

    def _held(self, key: tuple[str, str], now: float) -> int | None:
        """How many of ``key`` were held back since the last that passed, if one may pass
        now; else None, and it is counted as held back. The caller holds the lock."""
        passed, held = self._last.get(key, (-math.inf, 0))
        if now - passed < self.interval:
            self._last[key] = (passed, held + 1)
            return None
        return held

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written; it may gain a note of what was held back."""
        if record.levelno < logging.WARNING:
            return True
        key, now = (record.name, str(record.msg)), self._clock()
        with self._lock:
            held = self._held(key, now)
            if held is None:
                return False
            if len(self._last) >= self._MAX_TEMPLATES:
                self._last.clear()
            self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.interval:g} s]"
            record.fields = {**getattr(record, "fields", {}), "suppressed": held}
        return True


_throttle: Throttle | None = None  # the configured handler's


def held_back(logger: logging.Logger, msg: str) -> bool:
    """Whether the configured throttle holds back a warning of template ``msg`` from
    ``logger`` now (then counted, and said with the next one that passes); False when logging
    is not configured here."""
    return _throttle is not None and _throttle.holds_back(logger.name, msg)


# A line queued by defer_line() or as a LineRecord, formatted when its batch is written:
# (created, level, logger name, message object, fields)
PendingLine = tuple[float, int, str, object, dict[str, Any]]


def defer_line(
    logger: logging.Logger, level: int, msg: object, fields: dict[str, Any], size: int = 256
) -> bool:
    """Queue a line of ``logger`` at ``level`` for the thread that writes the batch, with no
    record and no trip through logging's handlers on the caller's thread. The caller has
    checked that ``logger`` is enabled for ``level``; ``msg`` and ``fields`` are as for
    :class:`LineRecord`, and the line written is the one a :class:`LineRecord` made now would
    give.

    Only when logging would hand that record to one handler alone, a batching
    :class:`LineWriter` with a :class:`LineFormatter` (whose subclasses make their lines in
    :meth:`LineFormatter.line`, not in ``format``) and no filter but the :class:`Throttle`
    (which lets every line below WARNING pass), and only below WARNING. Otherwise (a handler
    added by a test, say) nothing is queued and it returns False: the caller then hands a
    :class:`LineRecord` to ``logger``.
    """
    if level >= logging.WARNING or logger.disabled or logger.filters:
        return False
    writer: LineWriter | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if writer is not None or not isinstance(handler, LineWriter):
                return False
            writer = handler
        current = current.parent if current.propagate else None
    if (
        writer is None
        or level < writer.level
        or not isinstance(writer.formatter, LineFormatter)
        or not all(isinstance(check, Throttle) for check in writer.filters)
    ):
        return False
    return writer.defer((time.time(), level, logger.name, msg, fields), size)


class LineWriter(logging.Handler):
    """Writes formatted records to ``stream``, those below WARNING in batches.

    A request thread only appends its record: a background thread formats and writes what has
    gathered every ``flush_every`` seconds. A write is a system call during which the thread
    gives up the GIL and then waits to get it back: one a request made the access log the
    costliest part of a heartbeat (docs/operations.md, "Logs"). A batch is written in whole
    lines of at most ``PIPE_BUF`` bytes a write, so the lines of ``--workers`` sharing one
    pipe never mix. A record at WARNING or above is written at once, after every line before
    it, and so is the batch when it reaches ``MAX_PENDING`` lines or ``MAX_PENDING_BYTES``
    (the thread then waits for the stream, as an unbatched one would). ``flush_every=0``, a
    closed writer and a forked child write every record at once. ``close()``
    (``logging.shutdown`` at exit) writes what is left; a kill -9 loses at most
    ``flush_every`` seconds of lines.
    """

    MAX_PENDING = 10_000
    MAX_PENDING_BYTES = 4 * 1024 * 1024
    CLOSE_WAIT_SECONDS = 5.0  # how long close() waits for a batch stuck on the stream

    def __init__(self, stream: TextIO, flush_every: float = 0.0) -> None:
        super().__init__()
        self.stream = stream
        self._flush_every = flush_every
        self._pending: list[str | PendingLine] = []
        self._pending_bytes = 0
        # Re-entrant: a signal handler may log while its thread holds them.
        self._pending_lock = threading.RLock()
        self._write_lock = threading.RLock()  # batches reach the stream whole and in order
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        if flush_every > 0:
            self._writer = threading.Thread(target=self._write_every, name="log-writer")
            self._writer.daemon = True
            self._writer.start()
            mine = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _after_fork(mine))

    def handle(self, record: logging.LogRecord) -> bool:
        """Queue ``record`` (see :meth:`emit`) if the filters let it through."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``'s line (no handler lock: the queue has its own). A
        :class:`LineRecord` waits as its parts, formatted by the thread that writes the batch,
        off the request's path; any other record is formatted at once (its arguments may
        change later)."""
        batches = self._batches()
        item: str | PendingLine
        if batches and isinstance(record, LineRecord):
            item = (record.created, record.levelno, record.name, record.msg, record.fields)
            size = record.size
        else:
            line = self._line(record)
            if line is None:
                return
            item, size = line, len(line)
        self._queue(item, size, urgent=not batches or record.levelno >= logging.WARNING)

    def defer(self, line: PendingLine, size: int) -> bool:
        """Queue ``line``'s parts for the thread that writes the batch (see
        :func:`defer_line`); False, with nothing queued, when this writer does not batch."""
        if not self._batches():
            return False
        self._queue(line, size, urgent=False)
        return True

    def _queue(self, item: str | PendingLine, size: int, *, urgent: bool) -> None:
        """Add ``item`` to the batch; write the batch now if ``urgent`` or full, or if the
        writer is closing (an item that got in after close()'s last write is not left)."""
        with self._pending_lock:
            self._pending.append(item)
            self._pending_bytes += size
            full = (
                len(self._pending) >= self.MAX_PENDING
                or self._pending_bytes >= self.MAX_PENDING_BYTES
            )
        if urgent or full or self._stopping.is_set():
            self.flush()

    def flush(self) -> None:
        """Write every queued line now."""
        with self._write_lock:
            with self._pending_lock:
                items, self._pending, self._pending_bytes = self._pending, [], 0
            chunk: list[str] = []
            size = 0
            for item in items:
                line = self._text(item)
                if line is None:
                    continue
                length = len(line) if line.isascii() else len(line.encode(errors="replace"))
                if chunk and size + length > select.PIPE_BUF:
                    self._write("".join(chunk))
                    chunk, size = [], 0
                chunk.append(line)
                size += length
            if chunk:
                self._write("".join(chunk))

    def close(self) -> None:
        """Stop the background writer and write what is left."""
        self._stopping.set()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(self.CLOSE_WAIT_SECONDS)
        self.flush()
        super().close()

    def _batches(self) -> bool:
        """Whether lines below WARNING wait for the background writer."""
        writer = self._writer
        return writer is not None and not self._stopping.is_set() and writer.is_alive()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone or closed: nowhere left to say so
            pass

    def _text(self, item: str | PendingLine) -> str | None:
        """A queued item's line, with its newline; None (reported) when it cannot be made."""
        if isinstance(item, str):
            return item
        created, level, name, msg, fields = item
        formatter = self.formatter
        if not isinstance(formatter, LineFormatter):  # replaced since: format a record
            return self._line(LineRecord(name, level, msg, fields, created=created))
        try:
            text = formatter.line(created, logging.getLevelName(level), name, str(msg), fields)
        except Exception:
            self.handleError(LineRecord(name, level, msg, fields, created=created))
            return None
        return text + "\n"

    def _line(self, record: logging.LogRecord) -> str | None:
        """``record`` formatted, with its newline; None (reported) when it cannot be."""
        try:
            return self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return None

    def _write_every(self) -> None:
        while not self._stopping.wait(self._flush_every):
            try:
                self.flush()
            except Exception:
                continue


def _after_fork(writer: weakref.ref[LineWriter]) -> None:
    """In a forked child: no background writer (its thread was not forked), fresh locks, and
    none of the parent's waiting lines (the parent writes those)."""
    handler = writer()
    if handler is not None:
        handler._writer = None
        handler._pending_lock, handler._write_lock = threading.RLock(), threading.RLock()
        handler._pending, handler._pending_bytes = [], 0


def flush_lines() -> None:
    """Write every line waiting for its batch now: before anything written to stderr directly,
    so that the lines keep the order of the events."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(
    level: int, log_format: str, stream: TextIO | None = None, flush_every: float = 0.0
) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr).

    ``log_format`` is ``text``, ``json`` or ``auto`` (text on a terminal, JSON otherwise).
    ``flush_every`` > 0 writes lines below WARNING in batches that often (see
    :class:`LineWriter`); the service runs with :data:`FLUSH_SECONDS`.
    """
    # Our lines never show the caller's file, thread or process: skip collecting them for each
    # record (the logging HOWTO's "Optimization" section). Measured: -25 us a request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = LineWriter(stream, flush_every)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    global _throttle  # noqa: PLW0603 - logging's configuration is the process's
    _throttle = Throttle()
    handler.addFilter(_throttle)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, LineWriter):  # ours: its batch written, its thread stopped
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
