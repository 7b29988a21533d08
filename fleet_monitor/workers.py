"""``serve --workers N``: a supervisor and N worker processes serving one port.

The supervisor binds the port (a taken port stops the start at once), then starts N copies of
the same command line. Each inherits the listening sockets (their descriptors are named in
:data:`WORKER_FDS`) and serves them with its own threads and its own connections to the shared
store; the kernel gives each new connection to whichever worker accepts it first, so one
machine uses all its cores. A worker that dies is started again after a second; one that exits
with the usage-error status (a setting it cannot hold) stops them all. SIGTERM and SIGINT are
passed on to every worker (a second one too), and the supervisor returns once all have ended.
Only a shared store can be served this way: the memory store lives in one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, cast

from waitress.adjustments import Adjustments

from fleet_monitor.config import ConfigError, Settings

log = logging.getLogger(__name__)

WORKER_FDS = "FLEET_MONITOR_WORKER_FDS"  # set by the supervisor, for its workers only
RESTART_DELAY_S = 1.0
POLL_S = 0.1  # how often the supervisor looks at its workers and at the signals it got
USAGE_ERROR = 2


def check_workers(settings: Settings) -> None:
    """Raise ConfigError unless ``settings.workers`` processes can share the store."""
    if settings.workers > 1 and settings.store == "memory":
        raise ConfigError(
            f"--workers {settings.workers} needs a shared store (--store redis://…): the "
            "memory store lives in one process, so it can only be served by one (--workers 1)"
        )


def inherited_sockets() -> list[socket.socket] | None:
    """The listening sockets a supervisor handed this worker, or None when not a worker."""
    text = os.environ.get(WORKER_FDS)
    if not text:
        return None
    return [socket.socket(fileno=int(fd)) for fd in text.split(",")]


def bind_sockets(settings: Settings) -> list[socket.socket]:
    """Listening sockets for every address ``settings.host`` names (as waitress would bind
    them); raises OSError when one cannot be bound."""
    adjustments = Adjustments(host=settings.host, port=settings.port)
    bound: list[socket.socket] = []
    try:
        listen = cast(list[tuple[int, int, int, Any]], adjustments.listen)  # stubs say str
        for family, kind, proto, address in listen:
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(adjustments.backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def supervise(settings: Settings, command: Sequence[str]) -> int:
    """Serve ``settings`` with ``settings.workers`` processes, each running ``command`` (this
    process's own ``fleet-monitor`` arguments); return the exit status."""
    sockets = bind_sockets(settings)
    listening = [f"http://{host}:{port}" for host, port, *_ in (s.getsockname() for s in sockets)]
    log.info(
        "listening on %s with %d workers",
        ", ".join(listening),
        settings.workers,
        extra={"fields": {"listen": listening, "workers": settings.workers}},
    )
    supervisor = _Supervisor(
        [sys.executable, "-m", "fleet_monitor", *command],
        {**os.environ, WORKER_FDS: ",".join(str(s.fileno()) for s in sockets)},
        [s.fileno() for s in sockets],
    )
    try:
        return supervisor.run(settings.workers)
    finally:
        for sock in sockets:
            sock.close()


class _Supervisor:
    """Starts the workers, starts again those that die, passes stop signals on. Everything
    happens in the main thread's loop; a signal handler only notes the signal."""

    def __init__(self, command: list[str], env: dict[str, str], fds: list[int]) -> None:
        self._command, self._env, self._fds = command, env, fds
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._signals: list[int] = []
        self._stopping = False
        self._status = 0

    def run(self, count: int) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        due = [time.monotonic()] * count  # when each missing worker is to be started
        while self._workers or (due and not self._stopping):
            while self._signals:
                self._stop_all(self._signals.pop(0))
            for pid, exit_code in self._ended():
                if self._stopping:
                    continue
                if exit_code == USAGE_ERROR:
                    log.error("worker %d exited with status 2 (a setting): stopping", pid)
                    self._status = USAGE_ERROR
                    self._stop_all(signal.SIGTERM)
                    continue
                log.error(
                    "worker %d ended (%s); starting another in %.0f s",
                    pid,
                    _describe(exit_code),
                    RESTART_DELAY_S,
                    extra={"fields": {"worker": pid, "exit_code": exit_code}},
                )
                due.append(time.monotonic() + RESTART_DELAY_S)
            now = time.monotonic()
            while due and due[0] <= now and not self._stopping:
                due.pop(0)
                self._start()
            time.sleep(POLL_S)
        log.info("stopped")
        return self._status

    def _start(self) -> None:
        process = subprocess.Popen(self._command, env=self._env, pass_fds=self._fds)
        self._workers[process.pid] = process
        log.info("worker %d started", process.pid, extra={"fields": {"worker": process.pid}})

    def _ended(self) -> list[tuple[int, int]]:
        """The workers that have ended since the last look: pid and exit code."""
        ended = []
        for pid, worker in list(self._workers.items()):
            exit_code = worker.poll()
            if exit_code is not None:
                del self._workers[pid]
                ended.append((pid, exit_code))
        return ended

    def _stop_all(self, signum: int) -> None:
        if not self._stopping:
            log.info("%s: passed on to the workers", signal.Signals(signum).name)
        self._stopping = True
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signum)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)


def _describe(exit_code: int) -> str:
    if exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    return f"exit status {exit_code}"
