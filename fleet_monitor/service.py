"""The composition root: from one :class:`Settings`, the store, the app and the server.

``serve`` reads the devices file before the port opens (a bad one stops the start at once),
then opens the port with ``/healthz`` up and ``/readyz`` answering 503 while the store is
filled in the background; the API answers once it is loaded. On the way out the durable state
takes a last snapshot, so the next start replays nothing.
"""

from __future__ import annotations

import logging

from fleet_monitor.config import Settings
from fleet_monitor.http.app import create_app, new_memory_store
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.http.server import serve_app
from fleet_monitor.store.devices_file import fleet_device_ids
from fleet_monitor.store.durable import DurableStore

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Serve the fleet until a stop signal; raises DevicesFileError on a bad devices file,
    StateError/CorruptJournalError/SnapshotError on a state directory that cannot be used."""
    device_ids, source = fleet_device_ids(settings.devices)
    readiness = Readiness()
    store = new_memory_store(settings)
    durable = None
    if settings.data_dir is not None:
        durable = DurableStore(settings.data_dir, settings.fsync, settings.snapshot_every)

    def load() -> None:
        if durable is None:
            store.add_all(device_ids)
        else:
            durable.open(store, device_ids, repair=settings.repair)
        log.info(
            "loaded %d devices from %s",
            len(store),
            source if durable is None else f"{source} and {durable.directory}",
            extra={"fields": {"devices": len(store)}},
        )

    serve_app(create_app(settings, store, readiness=readiness), settings, readiness, load)
    if durable is not None:
        durable.close()
