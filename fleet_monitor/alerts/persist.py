"""The alerts' state kept across restarts (with ``--data-dir``): the episodes under way and
the deliveries waiting, in ``alerts.json``, rewritten whole and atomically (a temporary file,
fsynced, renamed, the directory fsynced) after every evaluation that changed them and every
delivery outcome. A restart therefore sends a pending alert once and never makes a second one
for an outage already told; an alert delivered just before a crash, whose outcome was not yet
written, is sent again (with the same ``id``, so its receiver can tell)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from fleet_monitor.store.journal_format import fsync_directory

FILE = "alerts.json"
VERSION = 1

log = logging.getLogger(__name__)


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
            aside = self.path.with_suffix(".damaged")
            log.error("%s cannot be read (%s): set aside as %s", self.path, error, aside)
            os.replace(self.path, aside)
            return {}
        if not isinstance(state, dict) or state.get("version") != VERSION:
            return {}
        return state

    def save(self, episodes: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        """Write the state (one writer at a time); an error is logged, not raised: alerts go
        on, and the next save tries again."""
        data = json.dumps({"version": VERSION, **episodes, "pending": pending}).encode()
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
