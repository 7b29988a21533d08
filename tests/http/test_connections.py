"""Connection slots against the real process: idle and slow clients cannot lock anyone out.

Each test holds hundreds or thousands of real sockets, from loopback source addresses
127.0.0.x standing for different clients. The only timings asserted are the sockets' own
5 s timeouts (liveness) and generous deadlines for the server to close what it should.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import DEVICE, live_server
from tests.support.rawhttp import (
    DEVICE_STATS_BODY,
    Answer,
    connect,
    exchange,
    get,
    is_closed,
    open_files,
    read_all,
    read_answer,
    sockets,
    wait_closed,
)

STATS = f"/api/v1/devices/{DEVICE}/stats"
HEALTHZ_BODY = b'{"status":"ok","devices":5}\n'
SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: fleet\r\nX-Pad: "


def assert_stats_answer(answer: Answer) -> None:
    assert answer.status_line == "HTTP/1.1 200 OK"
    assert answer.body == DEVICE_STATS_BODY


def test_idle_sockets_from_one_address_hold_at_most_its_share(tmp_path: Path) -> None:
    args = ["--header-timeout", "60"]  # only the per-client cap is at work here
    with open_files(4000), sockets() as idle, live_server(tmp_path, args) as server:
        for _ in range(1100):
            idle.append(connect(server.url))
        for source in ("127.0.0.1", "127.0.0.2"):  # the same client, and another one
            assert_stats_answer(exchange(server.url, get(STATS), source))
        # 64 slots for 127.0.0.1: each newcomer closed the longest-idle one; the stats
        # request took the last one's place, then closed after its answer.
        still_open = wait_closed(idle[:1037], deadline_s=5)
        assert still_open == []
        assert [sock for sock in idle if not is_closed(sock)] == idle[1037:]


def test_idle_keepalive_connections_make_room_at_the_global_limit(tmp_path: Path) -> None:
    args = ["--connection-limit", "100", "--header-timeout", "60"]
    with sockets() as idle, live_server(tmp_path, args) as server:
        for n in range(150):  # 15 clients of 10 connections: each under its own cap
            sock = connect(server.url, f"127.0.0.{10 + n // 10}")
            sock.sendall(get("/healthz", close=False))
            assert read_answer(sock).body == HEALTHZ_BODY
            idle.append(sock)
        assert_stats_answer(exchange(server.url, get(STATS), "127.0.0.2"))
        assert wait_closed(idle[:51], deadline_s=5) == []
        assert [sock for sock in idle if not is_closed(sock)] == idle[51:]
        messages = [line["msg"] for line in server.log_lines()]
    assert "at the connection limit (100): closed 1 idle or slow connections" in messages


@contextmanager
def dripping(socks: list[socket.socket]) -> Iterator[None]:
    """Send one more header byte on every socket each second (a slowloris)."""
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(1.0):
            for sock in socks:
                with contextlib.suppress(OSError):  # closed by the server: expected
                    sock.send(b"a")

    thread = threading.Thread(target=drip)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_slowloris_sockets_are_timed_out_and_never_block_others(tmp_path: Path) -> None:
    timeout_body = b'{"msg":"the request headers did not arrive within 2 s"}\n'
    with (
        open_files(4000),
        sockets() as slow,
        live_server(tmp_path, ["--header-timeout", "2"]) as server,
    ):
        for n in range(1000):  # 400 from 127.0.0.1, then 60 from each of 127.0.0.30-39
            source = "127.0.0.1" if n < 400 else f"127.0.0.{30 + (n - 400) // 60}"
            sock = connect(server.url, source)
            sock.sendall(SLOW_HEADERS)
            slow.append(sock)
        with dripping(slow):
            for source in ("127.0.0.1", "127.0.0.2"):
                assert_stats_answer(exchange(server.url, get(STATS), source))
            assert wait_closed(slow, deadline_s=8) == []
        answers = [read_all(sock) for sock in slow]
    timed_out = [data for data in answers if data]
    # The connections over 127.0.0.1's 64 were closed as newer ones came; all others got a 408.
    assert len(timed_out) == 600 + 63
    for data in timed_out:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
        assert b"Content-Type: application/json" in head.split(b"\r\n")
        assert body == timeout_body


def test_the_header_deadline_spares_idle_keepalive_connections(tmp_path: Path) -> None:
    timeout_body = b'{"msg":"the request headers did not arrive within 1 s"}\n'
    with sockets() as held, live_server(tmp_path, ["--header-timeout", "1"]) as server:
        silent = connect(server.url)  # connects, never sends
        kept = connect(server.url)  # one request, then idle: keep-alive's own timeout applies
        stalled = connect(server.url)  # one request, then half of the next one
        held.extend((silent, kept, stalled))
        kept.sendall(get("/healthz", close=False))
        assert read_answer(kept).body == HEALTHZ_BODY
        stalled.sendall(get("/healthz", close=False))
        assert read_answer(stalled).body == HEALTHZ_BODY
        stalled.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert wait_closed([silent, stalled], deadline_s=6) == []
        for sock in (silent, stalled):
            answer = read_answer(sock)
            assert answer.status_line == "HTTP/1.1 408 Request Timeout"
            assert answer.headers["connection"] == "close"
            assert answer.body == timeout_body
        assert not is_closed(kept)
        kept.sendall(get("/healthz"))
        assert read_answer(kept).body == HEALTHZ_BODY


def busy(url: str, source: str) -> socket.socket:
    """A connection whose request body is still arriving: never closed to make room."""
    sock = connect(url, source)
    sock.sendall(b"POST /api/v1/events HTTP/1.1\r\nHost: fleet\r\nContent-Length: 100\r\n\r\n{")
    return sock


def test_a_client_with_every_slot_busy_gets_a_503_but_its_probes_pass(tmp_path: Path) -> None:
    with sockets() as held, live_server(tmp_path, ["--connections-per-client", "3"]) as server:
        held.extend(busy(server.url, "127.0.0.1") for _ in range(3))
        refused = exchange(server.url, get(STATS))
        assert refused.status_line == "HTTP/1.1 503 Service Unavailable"
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {"msg": "too many connections from 127.0.0.1: at most 3, all busy"}
        probe = exchange(server.url, get("/healthz", close=False))
        assert (probe.status_line, probe.body) == ("HTTP/1.1 200 OK", HEALTHZ_BODY)
        assert probe.headers["connection"] == "close"  # a spare slot is not kept
        assert_stats_answer(exchange(server.url, get(STATS), "127.0.0.2"))


def test_a_full_server_refuses_with_503_and_keeps_spare_slots_for_probes(tmp_path: Path) -> None:
    args = ["--connection-limit", "4", "--header-timeout", "2"]
    with sockets() as held, live_server(tmp_path, args) as server:
        held.extend(busy(server.url, "127.0.0.1") for _ in range(4))
        refused = exchange(server.url, get(STATS), "127.0.0.2")
        assert refused.status_line == "HTTP/1.1 503 Service Unavailable"
        assert refused.json() == {"msg": "the service has 4 connections open, all busy"}
        ready = exchange(server.url, get("/readyz"), "127.0.0.2")
        assert ready.body == b'{"status":"ready","ready":true}\n'
        spares = [busy(server.url, "127.0.0.3") for _ in range(32)]  # every spare slot
        held.extend(spares)
        probe = exchange(server.url, get("/healthz"), "127.0.0.4")  # the oldest spare makes room
        assert (probe.status_line, probe.body) == ("HTTP/1.1 200 OK", HEALTHZ_BODY)
        assert read_all(spares[0]) == b""
        # A spare slot's slow body gets the header deadline; a real slot's does not.
        assert wait_closed(spares[1:], deadline_s=8) == []
        for sock in spares[1:]:
            assert read_answer(sock).status_line == "HTTP/1.1 408 Request Timeout"
        assert not any(is_closed(sock) for sock in held[:4])


def test_a_body_that_stops_arriving_gets_a_408_and_frees_its_slot(tmp_path: Path) -> None:
    args = ["--connection-limit", "4", "--request-timeout", "2", "--header-timeout", "60"]
    with sockets() as slow, live_server(tmp_path, args) as server:
        for n in range(4):  # every slot: a body promised and never sent
            sock = connect(server.url, f"127.0.0.{10 + n}")
            sock.sendall(
                f"POST /api/v1/devices/{DEVICE}/heartbeat HTTP/1.1\r\nHost: f\r\n"
                "Content-Length: 100\r\n\r\n{".encode()
            )
            slow.append(sock)
        assert wait_closed(slow, deadline_s=8) == []
        answers = [read_all(sock) for sock in slow]
        assert_stats_answer(exchange(server.url, get(STATS), "127.0.0.2"))
    for data in answers:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"HTTP/1.1 408 Request Timeout"
        assert body == b'{"msg":"the request body did not arrive within 2 s"}\n'


def test_a_client_that_never_reads_its_answers_cannot_hold_the_workers(tmp_path: Path) -> None:
    """Pipelined requests for big answers, never read: every worker would block on a full
    output buffer for as long as the client stays; the answer deadline closes it instead."""
    devices = tmp_path / "fleet.csv"
    devices.write_text("device_id\n" + "".join(f"{n:06d}{'x' * 120}\n" for n in range(2000)))
    args = ["--devices", str(devices), "--threads", "2", "--request-timeout", "2"]
    request = b"GET /api/v1/devices?limit=1000 HTTP/1.1\r\nHost: f\r\n\r\n" * 400
    with sockets() as greedy, live_server(tmp_path, args) as server:
        for n in range(2):  # as many as the workers
            sock = connect(server.url, f"127.0.0.{20 + n}")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            greedy.append(sock)
        assert wait_closed(greedy, deadline_s=15) == []  # closed: it was not reading
        answer = exchange(server.url, get("/api/v1/fleet"), "127.0.0.2")
        assert (answer.status_line, answer.json()["devices"]) == ("HTTP/1.1 200 OK", 2000)
