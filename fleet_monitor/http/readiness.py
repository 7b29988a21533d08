"""Whether the service takes traffic: starting, then ready (or degraded), then stopping."""

from __future__ import annotations

import threading
from collections.abc import Callable

STARTING = "starting"
READY = "ready"
DEGRADED = "degraded"
STOPPING = "stopping"

Check = Callable[[], str | None]  # why the service cannot take traffic now, or None


class Readiness:
    """The service's life cycle as ``/readyz`` reports it; safe to read from any thread.

    Once ready, each check added by :meth:`add_check` is asked at every :meth:`status`: the
    first that names a problem makes the service ``degraded`` (not ready) until it names
    none. The API keeps answering while degraded: only ``/readyz`` changes.
    """

    def __init__(self, state: str = STARTING) -> None:
        self._state = state
        self._loaded = state != STARTING
        self._lock = threading.Lock()
        self._checks: list[Check] = []

    @property
    def state(self) -> str:
        """``starting``, ``ready`` or ``stopping`` (the life cycle, without the checks)."""
        return self._state

    @property
    def is_ready(self) -> bool:
        """Whether the fleet is loaded and the service is not shutting down."""
        return self._state == READY

    @property
    def is_loaded(self) -> bool:
        """Whether the fleet is loaded, so the API can answer (also while stopping)."""
        return self._loaded

    def add_check(self, check: Check) -> None:
        """Ask ``check`` too whenever the service is ready (see the class docstring)."""
        with self._lock:
            self._checks.append(check)

    def status(self) -> tuple[str, str | None]:
        """What ``/readyz`` says: the state (``degraded`` when a check fails) and why."""
        state = self._state
        if state != READY:
            return state, None
        for check in list(self._checks):
            if (problem := check()) is not None:
                return DEGRADED, problem
        return READY, None

    def set_ready(self) -> None:
        """The fleet is loaded; unless a stop began meanwhile, the service is ready."""
        with self._lock:
            self._loaded = True
            if self._state == STARTING:
                self._state = READY

    def begin_stop(self) -> bool:
        """The service is shutting down; return False if it already was."""
        with self._lock:
            if self._state == STOPPING:
                return False
            self._state = STOPPING
            return True
