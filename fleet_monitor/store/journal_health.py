"""Whether the journal takes writes now: what ``/readyz`` reports as ``degraded``."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("fleet_monitor.journal")

PROBE_FILE = ".write-probe"
PROBE_BYTES = 64 * 1024
PROBE_INTERVAL_S = 1.0


class JournalHealth:
    """The journal's failures since its last success; safe across threads.

    A failed write or fsync makes it unhealthy, its error the reason; a later successful write
    or fsync makes it healthy again. So does a probe: while a write failure stands,
    :meth:`problem` writes (and deletes) a 64 KiB file in the directory at most once a
    second, so readiness recovers once space is freed though no write comes (a load balancer
    sends none to an instance whose ``/readyz`` answers 503). A failed fsync is retried by the
    journal's own background thread instead.
    """

    def __init__(self, directory: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._write_problem: str | None = None
        self._sync_problem: str | None = None
        self._probed_at = -math.inf

    @property
    def sync_failing(self) -> bool:
        """Whether the last fsync failed."""
        return self._sync_problem is not None

    def failed(self, message: str, *, sync: bool) -> None:
        """A write (or with ``sync``, an fsync) failed with ``message``."""
        with self._lock:
            healthy = self._write_problem is None and self._sync_problem is None
            if sync:
                self._sync_problem = message
            else:
                self._write_problem = message
                self._probed_at = self._clock()
        if healthy:
            log.warning(
                "the journal in %s failed (%s): /readyz answers 503 until it works again",
                self.directory,
                message,
                extra={"fields": {"journal_failed": message}},
            )

    def wrote(self) -> None:
        """A write succeeded (cheap when nothing had failed)."""
        if self._write_problem is not None:
            self._recovered(sync=False)

    def synced(self) -> None:
        """An fsync succeeded."""
        if self._sync_problem is not None:
            self._recovered(sync=True)

    def _recovered(self, *, sync: bool) -> None:
        with self._lock:
            if sync:
                self._sync_problem = None
            else:
                self._write_problem = None
            healthy = self._write_problem is None and self._sync_problem is None
        if healthy:
            log.info("the journal in %s works again", self.directory)

    def problem(self) -> str | None:
        """Why the journal cannot take writes now, naming its directory; None when it can.
        While a write failure stands, probes the directory (at most once a second)."""
        if self._sync_problem is None and self._write_problem is None:
            return None
        with self._lock:
            due = self._clock() - self._probed_at >= PROBE_INTERVAL_S
            if due:
                self._probed_at = self._clock()
        if due and self._sync_problem is None and self._probe():
            self.wrote()
        message = self._sync_problem or self._write_problem
        return None if message is None else f"{message} ({self.directory})"

    def _probe(self) -> bool:
        """Whether a 64 KiB file can be written in the directory now (it is deleted after)."""
        path = self.directory / PROBE_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(bytes(PROBE_BYTES))
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
        except OSError:
            return False
        return True
