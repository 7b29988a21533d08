"""Running a WSGI app under waitress until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import TYPE_CHECKING

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import WSGITask

from fleet_monitor.config import Settings
from fleet_monitor.http.app import batch_body_bytes
from fleet_monitor.http.readiness import Readiness

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

# waitress's own ceiling on bodies, kept above ours so that Flask answers an oversized
# body with the API's JSON 413 while waitress still refuses absurd ones.
WAITRESS_BODY_SLACK = 1024 * 1024


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
    ``settings.shutdown_grace`` seconds (a second signal ends that at once).
    """
    readiness = readiness or Readiness()
    server = create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        ident="fleet-monitor",
        max_request_body_size=max(settings.max_body_bytes, batch_body_bytes(settings))
        + WAITRESS_BODY_SLACK,
        channel_timeout=settings.channel_timeout,
        connection_limit=settings.connection_limit,
    )
    for listener in _listeners(server):
        listener.channel_class = KeepAliveChannel
    main_thread = threading.get_ident()

    def stop_soon() -> None:  # a real signal to the main thread wakes waitress's select()
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


class BodylessKeepAliveTask(WSGITask):
    """A waitress task that keeps HTTP/1.1 connections open after a 204 (or 304).

    waitress 3.0 closes the connection after any response that has no Content-Length, even
    a 204, which cannot have a body and so needs no length to end it; every device POST would
    then pay a new TCP connection. A client's ``Connection: close`` is still honoured, and
    so is every other reason waitress has to close.
    """

    def set_close_on_finish(self) -> None:
        """Close after this response, unless it is a body-less answer to a keep-alive request."""
        bodyless = not self.has_body and self.version == "1.1" and not self.wrote_header
        headers: dict[str, str] = getattr(self.request, "headers", {})
        wants_close = headers.get("CONNECTION", "").lower() == "close"
        if bodyless and not wants_close:
            return
        super().set_close_on_finish()


class KeepAliveChannel(HTTPChannel):
    """waitress's channel, running :class:`BodylessKeepAliveTask`."""

    task_class = BodylessKeepAliveTask


def _listeners(server: MultiSocketServer | BaseWSGIServer) -> list[BaseWSGIServer]:
    if isinstance(server, MultiSocketServer):
        dispatchers: Iterable[object] = (server.map or {}).values()
        return [s for s in dispatchers if isinstance(s, BaseWSGIServer)]
    return [server]


def _addresses(server: MultiSocketServer | BaseWSGIServer) -> list[tuple[str, int]]:
    if isinstance(server, MultiSocketServer):  # several sockets, e.g. "localhost": v4 and v6
        return [(str(host), int(port)) for host, port in server.effective_listen]
    assert server.socket is not None  # a created server is listening
    host, port = server.socket.getsockname()[:2]
    return [(str(host), int(port))]
