"""Servers the benchmark starts in their own process: the framework floor and our app.

``python -m benchmarks.servers KIND --port N --devices CSV`` serves until killed. ``preloaded``
first gives device ``big`` one heartbeat a minute for 1 000 000 minutes; ``always``,
``everysec`` and ``no`` are the service with a journal in a temporary directory and that fsync
mode.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from flask import Flask, Response

from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.http.app import create_app
from fleet_monitor.http.server import serve_app
from fleet_monitor.logs import configure_logging
from fleet_monitor.store.devices_file import load_device_ids
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import FSYNC_MODES
from fleet_monitor.store.memory import MemoryStore

BIG_MINUTES = 1_000_000
MINUTE_NS = 60 * 10**9


def floor_app() -> Flask:
    """The framework's floor: the heartbeat route answering 204, doing nothing else."""
    app = Flask(__name__)

    @app.post("/api/v1/devices/<device_id>/heartbeat")
    def heartbeat(device_id: str) -> Response:
        return Response(status=204)

    return app


def preloaded_store(devices: list[str]) -> MemoryStore:
    """``devices`` plus ``small`` (1 heartbeat) and ``big`` (1 000 000 heartbeat minutes)."""
    store = MemoryStore([*devices, "small", "big"])
    store.record("small", Heartbeat(28_000_000 * MINUTE_NS), None)
    for minute in range(28_000_000, 28_000_000 + BIG_MINUTES):
        store.record("big", Heartbeat(minute * MINUTE_NS), None)
    for n in range(100):
        store.record("big", Upload(28_000_000 * MINUTE_NS, 10**9 + n), None)
    return store


def main() -> None:
    """Serve the chosen app on the given port until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "kind", choices=("floor", "service", "preloaded", "always", "everysec", "no")
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=Path, default=Path("devices.csv"))
    args = parser.parse_args()
    configure_logging(logging.INFO, "text")  # as the service runs: access log included
    settings = Settings(port=args.port, log_level="info")
    devices = load_device_ids(args.devices)
    if args.kind == "floor":
        serve_app(floor_app(), settings)
    elif args.kind in FSYNC_MODES:  # the service with --data-dir and this --fsync
        with tempfile.TemporaryDirectory() as directory:
            store = MemoryStore()
            DurableStore(Path(directory), args.kind, 0).open(store, devices)
            serve_app(create_app(settings, store), settings)
    else:
        store = preloaded_store(devices) if args.kind == "preloaded" else MemoryStore(devices)
        serve_app(create_app(settings, store), settings)


if __name__ == "__main__":
    main()
