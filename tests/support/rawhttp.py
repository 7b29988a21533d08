"""Raw-socket HTTP for tests that need exact bytes, many sockets or chosen source addresses."""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEVICE_STATS_BODY = b'{"uptime":0.0,"avg_upload_time":"0s"}\n'


@dataclass
class Answer:
    """One HTTP response as read off a socket."""

    status_line: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(url: str) -> tuple[str, int]:
    """(host, port) of a server URL."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(url: str, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """A TCP connection to the server of ``url`` from the loopback address ``source``."""
    sock = socket.create_connection(address(url), timeout=timeout, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket) -> Answer:
    """Read one response: headers, then Content-Length bytes (or up to EOF or a reset)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(status_line, headers, body)


def exchange(url: str, request: bytes, source: str = "127.0.0.1", timeout: float = 5.0) -> Answer:
    """Send ``request`` on a new connection and read the one response."""
    with connect(url, source, timeout) as sock:
        sock.sendall(request)
        return read_answer(sock)


def get(path: str, close: bool = True) -> bytes:
    """A minimal GET request."""
    connection = b"Connection: close\r\n" if close else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: fleet\r\n" + connection + b"\r\n"


def is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` or sent on it unasked (a 408 before closing),
    without waiting: only an idle open connection has nothing to read."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.settimeout(timeout)


def wait_closed(socks: list[socket.socket], deadline_s: float) -> list[socket.socket]:
    """Wait up to ``deadline_s`` for every socket to be closed; return those still open."""
    deadline = time.monotonic() + deadline_s
    still = [s for s in socks if not is_closed(s)]
    while still and time.monotonic() < deadline:
        time.sleep(0.05)
        still = [s for s in still if not is_closed(s)]
    return still


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sent before closing (a reset ends it too)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionError:
        pass
    return data


@contextmanager
def open_files(needed: int) -> Iterator[None]:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(needed, hard)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list to collect sockets in; every one is closed at the end."""
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for sock in held:
            sock.close()
