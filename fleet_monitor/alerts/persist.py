"""The alerts' state kept across restarts (with ``--data-dir``): the episodes under way and the
deliveries waiting, in ``alerts.json``, rewritten whole and atomically (a temporary file,
fsynced, renamed, the directory fsynced) by every evaluation that changed them, and within a
second of a delivery's outcome. A restart therefore sends a pending alert once and never makes
a second one for an outage already told; an alert delivered in the second before a crash, whose
outcome was not yet written, is sent again (with the same ``id``, so its receiver can tell)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from fleet_monitor.store.journal_format import fsync_directory

FILE = "alerts.json"
VERSION = 1

log = logging.getLogger(__name__)


class StateKeeper(Protocol):
    """Where the alerts' state is kept."""

    def load(self) -> dict[str, Any]:
        """The state last saved (empty without one)."""

    def save(self, episodes: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        """Keep the state (an error is logged, not raised)."""

    def set_aside(self) -> None:
        """The state loaded could not be used: keep it out of the way (logged)."""


class Blobs(Protocol):
    """A shared engine's keys (the Valkey store)."""

    def get_blob(self, name: str) -> bytes | None:
        """The bytes kept as ``name``."""

    def set_blob(self, name: str, data: bytes) -> None:
        """Keep ``data`` as ``name``."""


class EngineAlertState:
    """The state in the shared engine (one key), for whichever process holds the alerts'
    lease: a process that takes it over carries on from there."""

    def __init__(self, engine: Blobs) -> None:
        self.engine = engine

    def load(self) -> dict[str, Any]:
        """The state last saved (empty without one, or when the engine cannot be read)."""
        try:
            data = self.engine.get_blob("alerts")
            state = json.loads(data) if data else {}
        except Exception as error:  # an engine that refuses, bytes that are not JSON
            log.error("the alerts' state could not be read from the engine: %s", error)
            return {}
        return state if isinstance(state, dict) and state.get("version") == VERSION else {}

    def save(self, episodes: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        """Keep the state in the engine (an error is logged: the next save tries again)."""
        try:
            self.engine.set_blob("alerts", _encoded(episodes, pending))
        except Exception as error:  # as the contract says: logged, never raised
            log.error("the alerts' state could not be saved: %s", error)

    def set_aside(self) -> None:
        """Nothing to move: the next save replaces it."""


def _encoded(episodes: dict[str, Any], pending: list[dict[str, Any]]) -> bytes:
    return json.dumps({"version": VERSION, **episodes, "pending": pending}).encode()


class AlertState:
    """``alerts.json`` in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any]:
        """The state last saved (empty without one; a damaged one is set aside and logged)."""
        try:
            state = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.error("%s cannot be read (%s)", self.path, error)
            self.set_aside()
            return {}
        if not isinstance(state, dict) or state.get("version") != VERSION:
            log.error("%s is not a state this version keeps", self.path)
            self.set_aside()
            return {}
        return state

    def set_aside(self) -> None:
        """Move the file to ``alerts.damaged`` (logged), so nothing overwrites it."""
        aside = self.path.with_suffix(".damaged")
        try:
            os.replace(self.path, aside)
        except OSError as error:
            log.error("%s could not be set aside: %s", self.path, error)
        else:
            log.error("%s set aside as %s", self.path, aside)

    def save(self, episodes: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        """Write the state (one writer at a time); an error is logged, not raised: alerts go
        on, and the next save tries again."""
        data = _encoded(episodes, pending)
        temporary = self.path.with_suffix(".tmp")
        with self._lock:
            try:
                with temporary.open("wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.path)
                fsync_directory(self.path.parent)
            except OSError as error:
                log.error("the alerts' state could not be saved: %s", error)
