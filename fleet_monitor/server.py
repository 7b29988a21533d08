"""Running the app under waitress until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from waitress.server import BaseWSGIServer, MultiSocketServer, create_server

from fleet_monitor.app import create_app
from fleet_monitor.config import Settings
from fleet_monitor.devices_file import load_device_ids
from fleet_monitor.fleet import Fleet

log = logging.getLogger(__name__)

# waitress's own ceiling on bodies, kept above ours so that Flask answers an oversized
# body with the API's JSON 413 while waitress still refuses absurd ones.
WAITRESS_BODY_SLACK = 1024 * 1024


def _stop(signum: int, _frame: FrameType | None) -> None:
    # waitress's loop ends on KeyboardInterrupt and lets its workers finish their requests.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def serve(settings: Settings) -> None:
    """Load the fleet, then serve it until a stop signal; raises DevicesFileError on a bad CSV."""
    device_ids = load_device_ids(settings.devices)
    fleet = Fleet(device_ids)
    app = create_app(settings, fleet)
    server = create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        ident="fleet-monitor",
        max_request_body_size=settings.max_body_bytes + WAITRESS_BODY_SLACK,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    listening = [f"http://{host}:{port}" for host, port in _addresses(server)]
    log.info(
        "listening on %s with %d devices from %s",
        ", ".join(listening),
        len(fleet),
        settings.devices,
        extra={"fields": {"listen": listening, "devices": len(fleet)}},
    )
    try:
        server.run()  # returns after a stop signal, once in-flight requests are done
    finally:
        server.close()
    log.info("stopped")


def _addresses(server: MultiSocketServer | BaseWSGIServer) -> list[tuple[str, int]]:
    if isinstance(server, MultiSocketServer):  # several sockets, e.g. "localhost": v4 and v6
        return [(str(host), int(port)) for host, port in server.effective_listen]
    assert server.socket is not None  # a created server is listening
    host, port = server.socket.getsockname()[:2]
    return [(str(host), int(port))]
