"""The alerts as the service runs them: the rules, an evaluation of the fleet every
``--alerts-every`` seconds on a background thread, and the delivery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fleet_monitor.alerts.delivery import Delivery, Tuning
from fleet_monitor.alerts.persist import StateKeeper
from fleet_monitor.alerts.rules import AlertRules
from fleet_monitor.alerts.states import Evaluator
from fleet_monitor.domain.errors import StoreUnavailableError
from fleet_monitor.domain.readmodels import Expectations, FleetReads, active_windows

log = logging.getLogger(__name__)
SAVE_EVERY_S = 1.0  # a delivery's outcome is saved within this (or with the next evaluation)


class Alerting:
    """Rules, their evaluator and their delivery, over ``store``."""

    def __init__(
        self,
        rules: AlertRules,
        store: FleetReads,
        expectations: Expectations,
        clock: Callable[[], int],
        *,
        every_s: float = 15.0,
        tuning: Tuning | None = None,
        count: Callable[[str], None] = lambda result: None,
        state: StateKeeper | None = None,
    ) -> None:
        self.rules, self.store, self.clock, self.every_s = rules, store, clock, every_s
        self.evaluator = Evaluator(rules, expectations)
        self.delivery = Delivery(rules.channels, tuning, count=count, changed=self._delivered)
        self._dirty = False  # a delivery's outcome not saved yet
        self._saved_at = -float("inf")  # time.monotonic() of the latest save
        self.state = state
        self.lease: Callable[[], bool] | None = None  # with several processes: who sends
        self._holding = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()  # one evaluation or save at a time
        self._restore()

    def share(self, lease: Callable[[], bool], state: StateKeeper) -> None:
        """Send only while ``lease()`` says this process holds the alerts' lease, carrying on
        from ``state`` when it takes it (several processes over one engine)."""
        self.lease, self.state = lease, state

    def _restore(self) -> None:
        """Carry on from the state kept, afresh (a state that cannot be taken back is
        logged, and the alerts start without it)."""
        self.evaluator.reset()
        self.delivery.clear()
        if self.state is None:
            return
        saved = self.state.load()
        try:
            self.evaluator.restore(saved)
            self.delivery.restore(saved.get("pending", []))
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            log.error("the alerts' saved state is not usable (%r): starting without it", error)
            self.state.set_aside()
            self.evaluator.reset()
            self.delivery.clear()

    def _delivered(self) -> None:
        """A delivery's outcome (the delivery thread's): saved at once when the latest save
        is a second old or more, else with the next one (at most one rewrite a second)."""
        self._dirty = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            with self._lock:
                self._save()

    def _holds(self) -> bool:
        """Whether this process sends now (always, without a lease); taking the lease over
        carries on from the state kept, losing it forgets what is under way here."""
        if self.lease is None:
            return True
        try:
            holding = self.lease()
        except StoreUnavailableError:
            holding = False
        if holding != self._holding:
            self._holding = holding
            log.info("alerts: this process %s the lease", "took" if holding else "lost")
            if holding:
                self._restore()
            else:
                self.evaluator.reset()
                self.delivery.clear()
        return holding

    def tick(self) -> int:
        """Evaluate the fleet now and queue what is due; return how many alerts."""
        with self._lock:
            if not self._holds():
                return 0
            now = self.clock()
            outgoing = self.evaluator.evaluate(
                self.store.heads(), now, active_windows(self.store, now)
            )
            for item in outgoing:
                self.delivery.submit(item.alert, item.channels, suppressed=item.suppressed)
            if self.evaluator.changed or self._dirty:
                self._save()
        return len(outgoing)

    def _save(self) -> None:
        """Keep the episodes and the waiting deliveries (with ``--data-dir``, or in the
        engine while holding its lease); call under the lock."""
        if self.state is not None and (self.lease is None or self._holding):
            self._dirty, self._saved_at = False, time.monotonic()
            self.state.save(self.evaluator.export(), self.delivery.export())

    def start(self) -> None:
        """Evaluate every ``every_s`` and deliver, in the background."""
        if not self.rules.rules and not self.rules.group_rules:
            return
        self.delivery.start()
        self._thread = threading.Thread(target=self._run, name="alert-rules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop evaluating, then stop the delivery (what is under way finishes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every_s + 5)
        self.delivery.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.tick()
            except Exception:  # a store that cannot be read now: the next tick tries again
                log.exception("alert rules could not be evaluated")
