"""Running a WSGI app under waitress until SIGTERM or SIGINT (``wsgi_server`` sets waitress up)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from waitress import wasyncore
from waitress.server import BaseWSGIServer, MultiSocketServer

from fleet_monitor.app import create_app
from fleet_monitor.config import Settings
from fleet_monitor.devices_file import load_device_ids
from fleet_monitor.durable import DurableStore
from fleet_monitor.fleet import Fleet
from fleet_monitor.readiness import Readiness
from fleet_monitor.wsgi_server import DescriptorLimitError, create_wsgi_server, ensure_descriptors

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

USAGE_ERROR = 2


def serve(settings: Settings) -> None:
    """Serve the fleet until a stop signal; raises DevicesFileError on a bad CSV.

    The CSV is read before the port opens, so a bad one stops the start at once. The port then
    opens with ``/healthz`` up and ``/readyz`` answering 503 while the fleet is built in the
    background; the API answers once it is loaded. A ``--connection-limit`` the open-file
    limit cannot hold ends the process with one line on stderr and exit status 2, as an
    invalid setting does (``cli.main`` does not catch :class:`ConfigError` from here).
    """
    device_ids = load_device_ids(settings.devices)
    readiness = Readiness()
    fleet = Fleet()
    store = None
    if settings.data_dir is not None:
        store = DurableStore(settings.data_dir, settings.fsync, settings.snapshot_every)

    def load() -> None:
        if store is None:
            fleet.add_all(device_ids)
        else:
            store.open(fleet, device_ids, repair=settings.repair)
        log.info(
            "loaded %d devices from %s",
            len(fleet),
            settings.devices if store is None else f"{settings.devices} and {store.directory}",
            extra={"fields": {"devices": len(fleet)}},
        )

    try:
        serve_app(create_app(settings, fleet, readiness=readiness), settings, readiness, load)
    except DescriptorLimitError as error:  # a setting this host cannot hold: exit as cli does
        print(f"fleet-monitor: error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
    if store is not None:
        store.close()  # a last snapshot: the next start replays nothing


def serve_app(
    app: WSGIApplication,
    settings: Settings,
    readiness: Readiness | None = None,
    load: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` with the service's waitress settings until SIGTERM or SIGINT.

    ``load`` runs in a thread once the port is open; ``readiness`` turns ready when it returns.
    If it raises, the server stops and the error is raised here. After a stop signal,
    ``readiness`` turns to stopping, and the server keeps serving for
    ``settings.shutdown_grace`` seconds (a second signal ends that at once). Raises
    :class:`DescriptorLimitError` before listening when the open-file limit (raised towards
    its hard limit as needed) cannot hold ``settings.connection_limit`` connections.
    """
    readiness = readiness or Readiness()
    ensure_descriptors(settings)
    server = create_wsgi_server(app, settings)
    main_thread = threading.get_ident()

    def stop_soon() -> None:  # a real signal to the main thread wakes waitress's poll()
        signal.pthread_kill(main_thread, signal.SIGTERM)

    interrupted = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():  # the loop is already ending: nothing more to do
            return
        name = signal.Signals(signum).name
        if readiness.begin_stop() and readiness.is_loaded and settings.shutdown_grace:
            log.info(
                "%s: /readyz answers 503; stopping in %d s",
                name,
                settings.shutdown_grace,
                extra={"fields": {"signal": name}},
            )
            timer = threading.Timer(settings.shutdown_grace, stop_soon)
            timer.daemon = True
            timer.start()
            return
        # waitress's loop ends on KeyboardInterrupt and lets its workers finish their requests.
        interrupted.set()
        raise KeyboardInterrupt(name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    listening = [f"http://{host}:{port}" for host, port in _addresses(server)]
    log.info("listening on %s", ", ".join(listening), extra={"fields": {"listen": listening}})
    failures: list[BaseException] = []

    def prepare() -> None:
        try:
            if load is not None:
                load()
        except BaseException as error:  # handed to the main thread, raised there
            failures.append(error)
            stop_soon()
            return
        readiness.set_ready()
        log.info("ready", extra={"fields": {"ready": True}})

    try:
        threading.Thread(target=prepare, name="load", daemon=True).start()
        server.run()  # returns after a stop signal, once in-flight requests are done
    except KeyboardInterrupt:
        pass  # a stop signal that came before the loop began
    finally:
        # Every socket: the listeners and the clients' idle keep-alive connections.
        socket_map = server.map if isinstance(server, MultiSocketServer) else server._map  # type: ignore[attr-defined]
        wasyncore.close_all(socket_map)
    if failures:
        raise failures[0]
    log.info("stopped")


def _addresses(server: MultiSocketServer | BaseWSGIServer) -> list[tuple[str, int]]:
    if isinstance(server, MultiSocketServer):  # several sockets, e.g. "localhost": v4 and v6
        return [(str(host), int(port)) for host, port in server.effective_listen]
    assert server.socket is not None  # a created server is listening
    host, port = server.socket.getsockname()[:2]
    return [(str(host), int(port))]
