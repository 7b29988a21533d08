"""Whether the service takes traffic: starting, then ready, then stopping."""

from __future__ import annotations

import threading

STARTING = "starting"
READY = "ready"
STOPPING = "stopping"


class Readiness:
    """The service's life cycle as ``/readyz`` reports it; safe to read from any thread."""

    def __init__(self, state: str = STARTING) -> None:
        self._state = state
        self._loaded = state != STARTING
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``starting``, ``ready`` or ``stopping``."""
        return self._state

    @property
    def is_ready(self) -> bool:
        """Whether the fleet is loaded and the service is not shutting down."""
        return self._state == READY

    @property
    def is_loaded(self) -> bool:
        """Whether the fleet is loaded, so the API can answer (also while stopping)."""
        return self._loaded

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
