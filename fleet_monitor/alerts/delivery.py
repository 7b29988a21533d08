"""Sending alerts: a bounded queue, a background sender, retries with exponential backoff and
jitter, a rate limit per channel, a timeout per attempt, and a log of what happened.

Each (alert, channel) is one delivery: tried at once, then after ``backoff``, twice that, …
(at most ``max_backoff``, each wait drawn between half and all of it) while the channel
answers that trying again may help, up to ``attempts`` tries. A channel past its
``per_minute`` waits for its next turn (not counted as a try). A full queue drops the new
delivery (logged and counted). The log keeps the latest :data:`LOG_SIZE` results.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_monitor.alerts.channels import Alert, DeliveryError
from fleet_monitor.alerts.rules import ChannelConfig
from fleet_monitor.domain.timestamps import format_rfc3339
from fleet_monitor.domain.tokens import TokenBucket

LOG_SIZE = 1000
QUEUE_SIZE = 10_000
RESULTS = ("sent", "failed", "retried", "dropped", "suppressed")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryRecord:
    """One delivery's outcome: ``result`` sent, failed (gave up), dropped (queue full) or
    suppressed (a group alert held)."""

    at_ns: int
    event: str
    subject: str
    channel: str
    result: str
    attempts: int
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        """``GET /api/v1/alerts/events``."""
        return {
            "at": format_rfc3339(self.at_ns),
            "event": self.event,
            "subject": self.subject,
            "channel": self.channel,
            "result": self.result,
            "attempts": self.attempts,
            "error": self.error,
        }


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    alert: Alert = field(compare=False)
    channel: str = field(compare=False)
    attempts: int = field(default=0, compare=False)


@dataclass
class Tuning:
    """How hard deliveries are tried."""

    attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    timeout_s: float = 10.0


class Delivery:
    """The queue, its sender thread and the log."""

    def __init__(
        self,
        channels: dict[str, ChannelConfig],
        tuning: Tuning | None = None,
        *,
        count: Callable[[str], None] = lambda result: None,
        changed: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], int] = time.time_ns,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.channels = channels
        self.tuning = tuning or Tuning()
        self._count, self._monotonic, self._wall, self._jitter = count, monotonic, wall, jitter
        self._changed = changed  # told after each outcome (the pending deliveries changed)
        now = monotonic()
        self._limits = {  # evenly spread: at most per_minute (and one) in any minute
            name: TokenBucket(c.per_minute / 60, 1, now) for name, c in channels.items()
        }
        self._jobs: list[_Job] = []
        self._in_flight: _Job | None = None  # being tried now (kept by export() too)
        self._epoch = 0  # clear()s so far: an outcome from before one is dropped
        self._seq = itertools.count()
        self._log: deque[DeliveryRecord] = deque(maxlen=LOG_SIZE)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, alert: Alert, channels: tuple[str, ...], *, suppressed: bool = False) -> None:
        """Queue ``alert`` for each of ``channels`` (or log it suppressed)."""
        with self._wake:
            for name in channels:
                if suppressed:
                    self._record(alert, name, "suppressed", 0)
                elif len(self._jobs) >= QUEUE_SIZE:
                    self._record(alert, name, "dropped", 0, "the queue is full")
                else:
                    heapq.heappush(
                        self._jobs, _Job(self._monotonic(), next(self._seq), alert, name)
                    )
            self._wake.notify()

    def export(self) -> list[dict[str, Any]]:
        """The deliveries waiting (for a restart: they are tried again then)."""
        with self._wake:
            jobs = (
                sorted(self._jobs)
                if self._in_flight is None
                else [self._in_flight, *sorted(self._jobs)]
            )
            return [
                {"alert": job.alert.to_json(), "channel": job.channel, "attempts": job.attempts}
                for job in jobs
            ]

    def restore(self, pending: list[dict[str, Any]]) -> None:
        """Queue again what :meth:`export` gave (to channels still in force), due now."""
        with self._wake:
            for item in pending:
                if item["channel"] in self.channels:
                    job = _Job(
                        self._monotonic(),
                        next(self._seq),
                        Alert.from_json(item["alert"]),
                        item["channel"],
                        item["attempts"],
                    )
                    heapq.heappush(self._jobs, job)
            self._wake.notify()

    def clear(self) -> None:
        """Drop every delivery waiting, and the outcome of one under way (another process
        sends them now)."""
        with self._wake:
            self._jobs.clear()
            self._epoch += 1

    def records(self) -> list[DeliveryRecord]:
        """The log, newest first."""
        with self._wake:
            return list(reversed(self._log))

    def pending(self) -> int:
        """Deliveries waiting or being retried."""
        with self._wake:
            return len(self._jobs)

    def run_due(self) -> float | None:
        """Try every delivery that is due; return the seconds until the next one is (None:
        none waits, or stopping). The sender thread's step; tests call it directly."""
        while True:
            with self._wake:
                if not self._jobs or self._stopping:
                    return None
                now = self._monotonic()
                if self._jobs[0].due > now:
                    return self._jobs[0].due - now
                job = heapq.heappop(self._jobs)
                wait = self._limits[job.channel].take(now)
                if wait > 0:  # past the channel's rate: its next turn, not a try
                    job.due = now + wait
                    heapq.heappush(self._jobs, job)
                    continue
                self._in_flight, epoch = job, self._epoch
            try:
                self._attempt(job, epoch)
            finally:
                with self._wake:
                    self._in_flight = None
            self._changed()

    def _attempt(self, job: _Job, epoch: int) -> None:
        job.attempts += 1
        config = self.channels[job.channel]
        try:
            config.channel.send(job.alert, self.tuning.timeout_s)
        except DeliveryError as error:
            with self._wake:
                if epoch != self._epoch:  # cleared meanwhile: another process has it
                    return
                if error.retry and job.attempts < self.tuning.attempts:
                    delay = min(
                        self.tuning.max_backoff_s, self.tuning.backoff_s * 2 ** (job.attempts - 1)
                    )
                    job.due = self._monotonic() + delay * (0.5 + self._jitter() / 2)
                    heapq.heappush(self._jobs, job)
                    self._count("retried")
                else:
                    self._record(job.alert, job.channel, "failed", job.attempts, str(error))
            return
        except Exception as error:  # a channel's own bug must not stop the sender
            log.exception("alert channel %s failed", job.channel)
            with self._wake:
                self._record(job.alert, job.channel, "failed", job.attempts, type(error).__name__)
            return
        with self._wake:
            self._record(job.alert, job.channel, "sent", job.attempts)

    def _record(
        self, alert: Alert, channel: str, result: str, attempts: int, error: str | None = None
    ) -> None:
        """Log and count an outcome (call under the lock)."""
        self._log.append(
            DeliveryRecord(
                self._wall(), alert.event, alert.subject, channel, result, attempts, error
            )
        )
        self._count(result)
        if result in ("failed", "dropped"):
            log.warning(
                "alert %s of %s to %s %s: %s", alert.event, alert.subject, channel, result, error
            )

    # --- the sender thread ---------------------------------------------------------------

    def start(self) -> None:
        """Start sending in the background."""
        self._thread = threading.Thread(target=self._run, name="alert-delivery", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop the sender (deliveries under way finish, within ``grace_s``)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(grace_s)

    def _run(self) -> None:
        while True:
            try:
                self.run_due()
            except Exception:  # the sender must outlive any error: it is the only one
                log.exception("alert delivery failed")
                time.sleep(1)
            with self._wake:  # what is due is looked at under the lock: no wake-up is lost
                if self._stopping:
                    return
                wait = self._jobs[0].due - self._monotonic() if self._jobs else None
                if wait is None or wait > 0:
                    self._wake.wait(timeout=wait)
