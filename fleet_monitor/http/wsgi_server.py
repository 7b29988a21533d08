"""waitress as the service runs it (docs/operations.md, "Connections and the reverse proxy",
tells the why of each part).

- The event loop uses ``poll()``: ``select()`` cannot watch a descriptor above 1023.
- At start, the soft open-file limit is raised to what ``--connection-limit`` needs, or the
  start is refused when the hard limit cannot hold it.
- Every connection goes through the :class:`~fleet_monitor.http.connections.ConnectionGuard`;
  waitress's own connection limit sits above ours and only catches what is still closing.
- Device writes run in a lane of their own (one thread when a write is CPU work only), so
  they never wait behind a slow read; ``/healthz``, ``/readyz`` and the error answers that
  need no app run on a reserved thread (the header deadline's 408 is written by the event
  loop itself).
- What waitress refuses itself (400, 413, 431, 501) is answered in the service's JSON.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from waitress.adjustments import Adjustments
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import Task, ThreadedTaskDispatcher, WSGITask

from fleet_monitor.config import ConfigError, Settings
from fleet_monitor.http.app import batch_body_bytes
from fleet_monitor.http.connections import (
    ANSWER,
    BODY,
    HEADERS,
    OVERFLOW,
    ConnectionGuard,
    client_key,
)
from fleet_monitor.http.waitress_errors import HeaderTimeoutError, JsonErrorTask, NoSlotError
from fleet_monitor.http.writes import DEVICE_WRITE_PATH
from fleet_monitor.logs import held_back

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

# waitress's own ceiling on bodies, kept above ours so that Flask answers an oversized
# body with the API's JSON 413 while waitress still refuses absurd ones.
WAITRESS_BODY_SLACK = 1024 * 1024
# Descriptors the process needs besides its client sockets: stdio, listeners, wake-up pipes,
# journal and snapshot files, the log file, and one for each accept() before an eviction.
DESCRIPTOR_MARGIN = 64
HEALTH_PATHS = frozenset(("/healthz", "/readyz"))


class DescriptorLimitError(ConfigError):
    """The open-file limit cannot hold ``--connection-limit`` connections."""


def waitress_connection_limit(settings: Settings) -> int:
    """waitress's limit on its socket map: ours, the spares, and room for closes in flight."""
    limit = settings.connection_limit
    return limit + OVERFLOW + 2 * max(1, limit // 100) + 8


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
        "connection_limit": waitress_connection_limit(settings),
        "asyncore_use_poll": True,  # select() fails on descriptors above 1023
        "cleanup_interval": 1,  # the header deadline is checked at each cleanup
    }


def ensure_descriptors(settings: Settings) -> int:
    """Raise the soft RLIMIT_NOFILE so that every connection fits; return the need.

    Raises :class:`DescriptorLimitError` when the hard limit is too low.
    """
    needed = waitress_connection_limit(settings) + DESCRIPTOR_MARGIN
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


class TimedRequestParser(HTTPRequestParser):
    """waitress's request parser, noting when the request's first byte and its last header
    arrived."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()
        self.headers_at: float | None = None

    def received(self, data: bytes) -> int:
        """Parse ``data`` (as waitress does); note when the headers were complete."""
        consumed: int = super().received(data)
        if self.headers_at is None and self.headers_finished:
            self.headers_at = time.monotonic()
        return consumed


class GuardedChannel(HTTPChannel):
    """A client connection that holds a slot of the server's :class:`ConnectionGuard`."""

    task_class = BodylessKeepAliveTask
    error_task_class = JsonErrorTask
    parser_class = TimedRequestParser

    def __init__(
        self,
        server: GuardedServer,
        sock: socket.socket,
        addr: Any,
        adj: Adjustments,
        map: dict[int, Any] | None = None,
    ) -> None:
        self.connected_at = self.served_at = time.monotonic()
        self.first_pending = True  # no request has been served yet
        self.answer_since: float | None = None  # since when an answer waits to leave
        self.refusal: str | None = None
        super().__init__(server, sock, addr, adj, map)
        self.guard = server.guard
        # None, or the sentence the request gets as a 503 (a spare slot: see connections.py)
        self.refusal = self.guard.admit(self, client_key(self.addr))

    def headers_awaited_since(self) -> float | None:
        """Since when request headers are awaited: from connecting for the first request,
        from its first byte (or the previous answer) for later ones; None when none are.

        A spare slot's request is answered 503 whatever its body, so it gets the header
        deadline for its body too: a slow body cannot keep a spare slot.
        """
        if self.requests or self.will_close or self.close_when_flushed:
            return None
        if self.refusal is not None:
            return self.connected_at
        request = cast(TimedRequestParser | None, self.request)
        if request is not None and request.headers_finished:
            return None  # its body is arriving
        if self.first_pending:
            return self.connected_at
        return None if request is None else max(request.started, self.served_at)

    def eviction_rank(self) -> tuple[int, float] | None:
        """(0, idle since) when idle; (1, headers awaited since) while they arrive; else None."""
        if self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed:
            return None
        if self.request is None:
            return (0, self.last_activity)
        since = self.headers_awaited_since()
        return None if since is None else (1, since)

    def evict(self, force: bool = False) -> bool:
        """Close at the loop's next turn, unless an idle one has data waiting to be read
        (and ``force`` is false); whether it will close."""
        if not force and self.request is None and self.socket is not None:
            try:
                if self.socket.recv(1, socket.MSG_PEEK):
                    return False  # a request is arriving: not idle after all
            except BlockingIOError:
                pass  # nothing to read: idle indeed
            except OSError:
                pass  # broken: closing is right
        self.will_close = True
        return True

    def late_since(self) -> tuple[str, float] | None:
        """What the client owes now (see :class:`~fleet_monitor.http.connections.Connection`):
        an answer to read, request headers, or the rest of a request body; since when."""
        if self.total_outbufs_len:
            if self.answer_since is None:
                self.answer_since = time.monotonic()
            return (ANSWER, self.answer_since)
        self.answer_since = None
        if (since := self.headers_awaited_since()) is not None:
            return (HEADERS, since)
        request = cast(TimedRequestParser | None, self.request)
        if request is not None and request.headers_at is not None and not request.completed:
            return (BODY, request.headers_at)
        return None

    def abandon(self) -> None:
        """Close now (on the event loop's thread), waking a worker blocked on the answer."""
        log.warning("closed a connection that did not read its answer: %s", self.addr)
        self.handle_close()

    def time_out(self, sentence: str) -> None:
        """Answer 408 (JSON, ``sentence``) and close once it is sent."""
        with self.requests_lock:  # type: ignore[attr-defined]  # the stubs miss it
            if self.requests or self.will_close or self.close_when_flushed:
                return  # a request is being answered: the next sweep looks again
            if self.request is not None:
                self.request.close()
                self.request = None
            self.close_when_flushed = True  # no more reading
        request = self.parser_class(self.adj)
        request.error = HeaderTimeoutError(sentence)
        request.version = "1.1"
        with contextlib.suppress(ClientDisconnected):  # gone already: nothing to answer
            self.error_task_class(self, request).service()  # type: ignore[arg-type]

    def service(self) -> None:
        """Serve the first queued request (on a worker thread)."""
        self.first_pending = False
        super().service()
        self.served_at = time.monotonic()

    def del_channel(self, map: Any = None) -> None:
        """Leave the socket map, and give the slot back."""
        super().del_channel(map)
        self.guard.release(self)


class GuardedServer(TcpWSGIServer):
    """A waitress listener whose channels go through ``guard``."""

    channel_class = GuardedChannel

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(*args, **kwargs)

    def handle_error(self) -> None:
        """Log an unexpected error while accepting, and keep listening.

        waitress would close the listener, and the process would then exit 0 in silence.
        """
        log.exception("unexpected error while accepting a connection")

    def maintenance(self, now: int) -> None:
        """waitress's idle timeout, then the guard's header deadlines."""
        super().maintenance(now)
        self.guard.sweep()

    def add_task(self, task: Task) -> None:
        """Queue a channel's parsed request; one on a spare slot is refused unless a probe."""
        channel = cast(GuardedChannel, task)
        if channel.refusal is not None:
            request = channel.requests[0]
            if request.error is None and getattr(request, "path", None) in HEALTH_PATHS:
                headers = cast(dict[str, str], request.headers)
                headers["CONNECTION"] = "close"  # answer the probe, then free the spare slot
            elif request.error is None:
                request.error = NoSlotError(channel.refusal)
        super().add_task(task)


class QueueLog:
    """waitress's queue logger (it warns ``Task queue depth is N`` for every request queued
    while no thread is idle: under load, every request), asking the log's throttle first: a
    warning it would hold back costs the event loop no record."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def warning(self, msg: str, *args: object) -> None:
        """Log ``msg % args`` unless the throttle holds it back."""
        if self.logger.isEnabledFor(logging.WARNING) and not held_back(self.logger, msg):
            self.logger.warning(msg, *args)


# Threads of the device-write lane when a write is CPU work only (the memory store, no fsync
# per write): under one GIL, more writers only take turns at it, each turn a hand-over between
# threads: the service fell further behind waitress's ceiling with each busy thread more, while
# the ceiling hardly moved (row 1 of benchmarks/results.md measures the service with this lane).
CPU_WRITE_THREADS = 1


def write_threads(settings: Settings) -> int:
    """Threads of the device-write lane: :data:`CPU_WRITE_THREADS` when a write is CPU work
    only, else ``--threads`` (a write that waits on a disk or an engine gives the GIL up)."""
    waits = settings.store != "memory" or (
        settings.data_dir is not None and settings.fsync == "always"
    )
    return settings.threads if waits else min(CPU_WRITE_THREADS, settings.threads)


class LaneDispatcher(ThreadedTaskDispatcher):
    """waitress's worker threads (reads and everything else), plus a lane for device writes
    and one thread reserved for health checks and error answers.

    The lane is chosen once the request is parsed, by its method and path. A device write
    (``POST …/heartbeat`` or ``…/stats``) never waits behind a slow read. Error answers
    (waitress's own, the guard's 503s) need no app code and take microseconds, so they go to
    the reserved thread with the probes. Each lane's queue warnings have a logger of its own.
    """

    def __init__(self, writers: int) -> None:
        super().__init__()
        self.queue_logger = QueueLog("waitress.queue")  # type: ignore[assignment]
        self.writes = self._lane("waitress.queue.writes", writers)
        self.reserved = self._lane("waitress.queue.reserved", 1)

    @staticmethod
    def _lane(logger: str, threads: int) -> ThreadedTaskDispatcher:
        lane = ThreadedTaskDispatcher()
        lane.queue_logger = QueueLog(logger)  # type: ignore[assignment]
        lane.set_thread_count(threads)
        return lane

    def add_task(self, task: Task) -> None:
        """Queue ``task`` (a channel) in its lane."""
        requests = getattr(task, "requests", None)
        request = requests[0] if requests else None
        path = getattr(request, "path", None) or ""
        if request is not None and (request.error is not None or path in HEALTH_PATHS):
            self.reserved.add_task(task)
        elif getattr(request, "command", None) == "POST" and DEVICE_WRITE_PATH.fullmatch(path):
            self.writes.add_task(task)
        else:
            super().add_task(task)

    def shutdown(self, cancel_pending: bool = True, timeout: int = 5) -> bool:
        """Stop every lane (their threads all told first, so they stop together)."""
        for lane in (self.reserved, self.writes, self):
            ThreadedTaskDispatcher.set_thread_count(lane, 0)
        self.reserved.shutdown(cancel_pending, timeout)
        self.writes.shutdown(cancel_pending, timeout)
        return super().shutdown(cancel_pending, timeout)


def create_wsgi_server(
    app: WSGIApplication, settings: Settings, sockets: list[socket.socket] | None = None
) -> GuardedServer | MultiSocketServer:
    """Listeners for ``app``, not yet running: on ``sockets`` (already listening, e.g. handed
    down by a supervisor), else one per address ``settings.host`` names."""
    adj = Adjustments(**waitress_options(settings))
    guard = ConnectionGuard(
        settings.connection_limit,
        settings.connections_per_client,
        settings.header_timeout,
        settings.request_timeout,
    )
    dispatcher = LaneDispatcher(write_threads(settings))
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    common: dict[str, Any] = {"dispatcher": dispatcher, "adj": adj, "guard": guard}
    listeners = (
        [
            GuardedServer(
                app,
                socket_map,
                True,
                sock,
                sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
                bind_socket=False,
                **common,
            )
            for sock in sockets
        ]
        if sockets
        else [GuardedServer(app, socket_map, sockinfo=info, **common) for info in adj.listen]
    )
    if len(listeners) == 1:
        return listeners[0]
    effective = [(str(s.effective_host), int(s.effective_port)) for s in listeners]  # type: ignore[attr-defined]
    return MultiSocketServer(socket_map, adj, effective, dispatcher, listeners[-1].log_info)
