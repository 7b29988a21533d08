"""Running a WSGI app under waitress until SIGTERM or SIGINT (``wsgi_server`` sets waitress up)."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from waitress import wasyncore
from waitress.server import BaseWSGIServer, MultiSocketServer

from fleet_monitor.config import Settings
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.http.wsgi_server import create_wsgi_server, ensure_descriptors

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

# A thread holding the GIL (a long windowed read) hands it over after 1 ms, not 5: with 16
# clients reading 10,000-step windows, heartbeat p50 falls from 98 to 23 ms, and heartbeat
# throughput is unchanged (measured; docs/operations.md, "Limits and failure modes").
GIL_SWITCH_SECONDS = 0.001


def serve_app(
    app: WSGIApplication,
    settings: Settings,
    readiness: Readiness | None = None,
    load: Callable[[], None] | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` with the service's waitress settings until SIGTERM or SIGINT.

    ``load`` runs in a thread once the port is open; ``readiness`` turns ready when it returns.
    If it raises, the server stops and the error is raised here. After a stop signal,
    ``readiness`` turns to stopping, and the server keeps serving for
    ``settings.shutdown_grace`` seconds (a second signal ends that at once). ``sockets`` are
    listening sockets to serve instead of binding ``settings``' address. Raises
    :class:`DescriptorLimitError` before listening when the open-file limit (raised towards
    its hard limit as needed) cannot hold ``settings.connection_limit`` connections.
    """
    readiness = readiness or Readiness()
    ensure_descriptors(settings)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    server = create_wsgi_server(app, settings, sockets)
    stopper = _Stopper(readiness, settings.shutdown_grace)
    listening = [f"http://{host}:{port}" for host, port in _addresses(server)]
    log.info("listening on %s", ", ".join(listening), extra={"fields": {"listen": listening}})
    failures: list[BaseException] = []
    loader = threading.Thread(
        target=_load, args=(load, readiness, failures, stopper.stop_soon), name="load"
    )
    loader.daemon = True
    try:
        loader.start()
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


def _load(
    load: Callable[[], None] | None,
    readiness: Readiness,
    failures: list[BaseException],
    stop_soon: Callable[[], None],
) -> None:
    """Run ``load``, then turn ready; a failure is handed to the main thread, which stops."""
    try:
        if load is not None:
            load()
    except BaseException as error:  # raised in the main thread by serve_app
        failures.append(error)
        stop_soon()
        return
    readiness.set_ready()
    log.info("ready", extra={"fields": {"ready": True}})


class _Stopper:
    """SIGTERM and SIGINT: readiness to stopping, the grace period, then the loop's end."""

    def __init__(self, readiness: Readiness, grace_s: int) -> None:
        self._readiness, self._grace_s = readiness, grace_s
        self._main_thread = threading.get_ident()
        self._interrupted = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def stop_soon(self) -> None:
        """Stop as a signal would (a real signal to the main thread wakes waitress's poll())."""
        signal.pthread_kill(self._main_thread, signal.SIGTERM)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._interrupted.is_set():  # the loop is already ending: nothing more to do
            return
        name = signal.Signals(signum).name
        readiness = self._readiness
        if readiness.begin_stop() and readiness.is_loaded and self._grace_s:
            log.info(
                "%s: /readyz answers 503; stopping in %d s",
                name,
                self._grace_s,
                extra={"fields": {"signal": name}},
            )
            timer = threading.Timer(self._grace_s, self.stop_soon)
            timer.daemon = True
            timer.start()
            return
        # waitress's loop ends on KeyboardInterrupt and lets its workers finish their requests.
        self._interrupted.set()
        raise KeyboardInterrupt(name)


def _addresses(server: MultiSocketServer | BaseWSGIServer) -> list[tuple[str, int]]:
    if isinstance(server, MultiSocketServer):  # several sockets, e.g. "localhost": v4 and v6
        return [(str(host), int(port)) for host, port in server.effective_listen]
    assert server.socket is not None  # a created server is listening
    host, port = server.socket.getsockname()[:2]
    return [(str(host), int(port))]
