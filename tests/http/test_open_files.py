"""Descriptors: over 1,023 connections with poll(), and the open-file limit checked at start."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEVICE, REPO, live_server
from tests.support.rawhttp import DEVICE_STATS_BODY, connect, exchange, get, open_files, sockets

# `python -c` running `fleet-monitor ARGS` with the soft open-file limit at 1,024 (as on
# most hosts), the hard limit left as it is.
LOW_SOFT_LIMIT = (
    sys.executable,
    "-c",
    "import resource, runpy, sys;"
    "resource.setrlimit(resource.RLIMIT_NOFILE,"
    " (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]));"
    "sys.argv = ['fleet-monitor', *sys.argv[1:]];"
    "runpy.run_module('fleet_monitor', run_name='__main__')",
    "serve",
)


def open_file_limit(pid: int) -> int:
    """The soft RLIMIT_NOFILE of a running process (Linux)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def test_over_1023_connections_are_served_once_the_soft_limit_is_raised(tmp_path: Path) -> None:
    args = ["--connection-limit", "1500", "--connections-per-client", "1500"]
    with (
        open_files(4000),
        sockets() as held,
        live_server(tmp_path, args, command=LOW_SOFT_LIMIT) as server,
    ):
        for _ in range(1100):  # descriptors above 1023 in the server: select() died there
            held.append(connect(server.url))
        answer = exchange(server.url, get(f"/api/v1/devices/{DEVICE}/stats"), "127.0.0.2")
        assert (answer.status_line, answer.body) == ("HTTP/1.1 200 OK", DEVICE_STATS_BODY)
        assert server.process.poll() is None
        assert open_file_limit(server.process.pid) >= 1500


def _at_most_1024_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_a_connection_limit_the_hard_limit_cannot_hold_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleet_monitor", "serve", "--port", "0"],
        cwd=REPO,
        env={"FLEET_MONITOR_CONNECTION_LIMIT": "2000", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        preexec_fn=_at_most_1024_files,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "fleet-monitor: error: a connection limit of 2000 needs 2144 open files, but the "
        "limit is 1024 (at most 1024): lower --connection-limit or raise the limit "
        "(ulimit -n, systemd LimitNOFILE=)"
    ]
    assert result.stdout == ""
