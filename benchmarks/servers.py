"""Servers the benchmark starts in their own process: waitress's ceiling, the framework floor
and our app.

``python -m benchmarks.servers KIND --port N --devices CSV`` serves until killed. ``ceiling``
is a bare WSGI callable on the service's waitress; ``quiet`` is the service with its access
log at warning level; ``json`` the service writing JSON lines. ``preloaded``
first gives device ``big`` one heartbeat a minute for 1 000 000 minutes; ``always``,
``everysec`` and ``no`` are the service with a journal in a temporary directory and that fsync
mode.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, Response

from fleet_monitor.config import Settings
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.http.app import create_app
from fleet_monitor.http.server import serve_app
from fleet_monitor.logs import ACCESS_LOGGER, FLUSH_SECONDS, configure_logging
from fleet_monitor.store.devices_file import load_device_ids
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import FSYNC_MODES
from fleet_monitor.store.memory import MemoryStore

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

BIG_MINUTES = 1_000_000
MINUTE_NS = 60 * 10**9


def floor_app() -> Flask:
    """The framework's floor: the heartbeat route answering 204, doing nothing else."""
    app = Flask(__name__)

    @app.post("/api/v1/devices/<device_id>/heartbeat")
    def heartbeat(device_id: str) -> Response:
        return Response(status=204)

    return app


def ceiling_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """waitress's ceiling: a bare WSGI callable that reads the body and answers 204."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("204 No Content", [])
    return ()


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
        "kind",
        choices=(
            "ceiling",
            "floor",
            "service",
            "json",
            "quiet",
            "preloaded",
            "always",
            "everysec",
            "no",
        ),
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=Path, default=Path("devices.csv"))
    parser.add_argument("--threads", type=int, default=Settings().threads)
    args = parser.parse_args()
    settings = Settings(port=args.port, log_level="info", threads=args.threads)
    # As the service runs, access log on: text lines (``json``: JSON lines, as ``--log-format
    # auto`` writes them when stderr is not a terminal).
    log_format = "json" if args.kind == "json" else "text"
    configure_logging(settings.log_level_number, log_format, flush_every=FLUSH_SECONDS)
    if args.kind == "quiet":  # the service with its access log at warning level
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    devices = load_device_ids(args.devices)
    if args.kind == "ceiling":
        serve_app(ceiling_app, settings)
    elif args.kind == "floor":
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
