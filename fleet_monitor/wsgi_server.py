"""waitress as the service runs it: an event loop on ``poll()``, enough open files, keep-alive.

- The event loop uses ``poll()``: ``select()`` cannot watch a descriptor above 1023, and the
  process died once about 1,020 clients were connected.
- At start, the soft open-file limit is raised to what ``--connection-limit`` needs, or the
  start is refused when the hard limit cannot hold it.
- What waitress refuses itself (400, 413, 431, 501) is answered in the service's JSON.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher, WSGITask

from fleet_monitor.app import batch_body_bytes
from fleet_monitor.config import ConfigError, Settings
from fleet_monitor.http_errors import JsonErrorTask

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

# waitress's own ceiling on bodies, kept above ours so that Flask answers an oversized
# body with the API's JSON 413 while waitress still refuses absurd ones.
WAITRESS_BODY_SLACK = 1024 * 1024
# Descriptors the process needs besides its client sockets: stdio, listeners, wake-up pipes,
# journal and snapshot files, the log file.
DESCRIPTOR_MARGIN = 64


class DescriptorLimitError(ConfigError):
    """The open-file limit cannot hold ``--connection-limit`` connections."""


def waitress_options(settings: Settings) -> dict[str, Any]:
    """The waitress adjustments for ``settings``."""
    return {
        "host": settings.host,
        "port": settings.port,
        "threads": settings.threads,
        "ident": "fleet-monitor",
        "max_request_body_size": max(settings.max_body_bytes, batch_body_bytes(settings))
        + WAITRESS_BODY_SLACK,
        "channel_timeout": settings.channel_timeout,
        "connection_limit": settings.connection_limit,
        "asyncore_use_poll": True,  # select() fails on descriptors above 1023
    }


def ensure_descriptors(settings: Settings) -> int:
    """Raise the soft RLIMIT_NOFILE so that every connection fits; return the need.

    Raises :class:`DescriptorLimitError` when the hard limit is too low.
    """
    needed = settings.connection_limit + DESCRIPTOR_MARGIN
    if sys.platform == "win32":  # no such limit; select() there takes any socket
        return needed
    import resource  # noqa: PLC0415 - POSIX only

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError):
        raise DescriptorLimitError(
            f"a connection limit of {settings.connection_limit} needs {needed} open files, but "
            f"the limit is {soft} (at most {hard}): lower --connection-limit or raise the "
            "limit (ulimit -n, systemd LimitNOFILE=)"
        ) from None
    return needed


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
    """waitress's channel, running :class:`BodylessKeepAliveTask`, and answering what waitress
    refuses itself in JSON (:class:`JsonErrorTask`)."""

    task_class = BodylessKeepAliveTask
    error_task_class = JsonErrorTask


class FleetServer(TcpWSGIServer):
    """A waitress listener whose connections are :class:`KeepAliveChannel`."""

    channel_class = KeepAliveChannel


def create_wsgi_server(app: WSGIApplication, settings: Settings) -> FleetServer | MultiSocketServer:
    """Listeners for ``app`` (one per address ``settings.host`` names), not yet running."""
    adj = Adjustments(**waitress_options(settings))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    listeners = [
        FleetServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=info)
        for info in cast(list[Any], adj.listen)  # the stubs call it a str
    ]
    if len(listeners) == 1:
        return listeners[0]
    effective = [(str(s.effective_host), int(s.effective_port)) for s in listeners]  # type: ignore[attr-defined]
    return MultiSocketServer(socket_map, adj, effective, dispatcher, listeners[-1].log_info)
