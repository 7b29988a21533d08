"""The composition root: from one :class:`Settings`, the store, the app and the server.

``serve`` reads the devices file before the port opens (a bad one stops the start at once),
then opens the port with ``/healthz`` up and ``/readyz`` answering 503 while the store is
filled in the background; the API answers once it is loaded. On the way out the durable state
takes a last snapshot, so the next start replays nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence

from fleet_monitor.alerts.persist import EngineAlertState
from fleet_monitor.alerts.service import Alerting
from fleet_monitor.config import ConfigError, Settings
from fleet_monitor.domain.errors import StoreUnavailableError
from fleet_monitor.domain.limits import HistoryBudget
from fleet_monitor.http.app import create_app
from fleet_monitor.http.context import context_of
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.http.server import serve_app
from fleet_monitor.store.devices_file import DevicesFile, fleet_devices
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.memory import MemoryStore
from fleet_monitor.store.valkey import ValkeyStore
from fleet_monitor.workers import check_workers, inherited_sockets, supervise

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between two tries of an engine that cannot be reached at start


def new_store(settings: Settings) -> MemoryStore | ValkeyStore:
    """The empty store ``settings`` ask for, bounded by their limits (devices, history)."""
    if settings.store != "memory":
        return ValkeyStore(
            settings.store,
            per_device_bytes=settings.max_device_bytes,
            fleet_bytes=settings.max_fleet_bytes,
            max_devices=settings.max_devices,
        )
    budget = HistoryBudget(settings.max_device_bytes, settings.max_fleet_bytes)
    return MemoryStore(budget=budget, max_devices=settings.max_devices)


def serve(settings: Settings, command: Sequence[str] = ()) -> int:
    """Serve the fleet until a stop signal; return the exit status. With ``--workers`` above
    1, supervise that many workers, each running ``command`` (this process's arguments).
    Raises ConfigError on settings that do not go together, DevicesFileError on a bad devices
    file, StateError/CorruptJournalError/SnapshotError on a state directory that cannot be
    used, OSError when the port cannot be bound."""
    if settings.store != "memory" and settings.data_dir is not None:
        raise ConfigError(
            "--data-dir keeps the memory store's state; with --store URL the engine keeps it "
            "(its AOF): drop one of them (fleet-monitor migrate moves a data dir into the engine)"
        )
    check_workers(settings)
    devices_file, source = fleet_devices(settings.devices)
    device_ids = devices_file.ids
    sockets = inherited_sockets()
    if settings.workers > 1 and sockets is None:
        return supervise(settings, command)
    readiness = Readiness()
    store = new_store(settings)
    durable = None
    if isinstance(store, MemoryStore) and settings.data_dir is not None:
        durable = DurableStore(settings.data_dir, settings.fsync, settings.snapshot_every)

    def load() -> None:
        if durable is not None and isinstance(store, MemoryStore):
            durable.open(store, device_ids, repair=settings.repair)
            store.apply_file_profiles(devices_file.profiles)
        else:
            _add_when_reachable(store, devices_file)
        where = source if durable is None else f"{source} and {durable.directory}"
        if isinstance(store, ValkeyStore):
            where = f"{source} into {store.url}"
        log.info(
            "loaded %d devices from %s",
            len(store),
            where,
            extra={"fields": {"devices": len(store)}},
        )
        _start_alerts(alerting, store, settings)

    app = create_app(settings, store, readiness=readiness)
    alerting = context_of(app).alerting
    serve_app(app, settings, readiness, load, sockets)
    alerting.stop()
    if durable is not None:
        durable.close()
    if isinstance(store, ValkeyStore):
        store.close()
    return 0


def _start_alerts(alerting: Alerting, store: MemoryStore | ValkeyStore, settings: Settings) -> None:
    """Evaluate the alert rules from now on. Over a shared engine every process asks for the
    alerts' lease, and only its holder (one at a time, taken over when it stops renewing it)
    evaluates and sends, carrying on from the state it keeps in the engine."""
    if not alerting.rules.rules and not alerting.rules.group_rules:
        return
    if isinstance(store, ValkeyStore):
        holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        life_ms = int(max(3 * settings.alerts_every, 5) * 1000)
        alerting.share(lambda: store.hold_lease("alerts", holder, life_ms), EngineAlertState(store))
    alerting.start()
    log.info("alert rules evaluated every %g s", settings.alerts_every)


def _add_when_reachable(store: MemoryStore | ValkeyStore, devices_file: DevicesFile) -> None:
    """Add the devices file's ids and give them its profiles (where the API set none),
    waiting (``/readyz`` 503 meanwhile) for an engine that cannot be reached yet: it may be
    starting too."""
    while True:
        try:
            store.add_all(devices_file.ids)
            store.apply_file_profiles(devices_file.profiles)
        except StoreUnavailableError as error:
            log.warning("waiting for the store: %s", error)  # throttled: one per 10 s
            time.sleep(RETRY_S)
        else:
            return
