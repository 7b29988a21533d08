"""The server's life cycle (port open before the fleet loads, ready after, grace on SIGTERM),
its lanes (device writes, and probes, never behind slow reads), and its throttled queue
warnings."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from waitress.task import ThreadedTaskDispatcher

from fleet_monitor.config import Settings
from fleet_monitor.http.app import create_app
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.http.server import serve_app
from fleet_monitor.http.wsgi_server import LaneDispatcher, create_wsgi_server, write_threads
from fleet_monitor.logs import THROTTLE_SECONDS
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES, LiveServer, live_server
from tests.support.rawhttp import connect, exchange, get, is_closed, read_answer, sockets


class _Listening(logging.Handler):
    """Catches the URL of the server's "listening on" line."""

    def __init__(self) -> None:
        super().__init__()
        self.url: str | None = None
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        if "listen" in fields:
            self.url = fields["listen"][0]
            self.seen.set()


@contextmanager
def _restored_signal_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _serve_in_main_thread(
    load: Callable[[], None],
    client: Callable[[str], None],
    store: MemoryStore,
    readiness: Readiness,
    stop: bool = True,
) -> None:
    """Run serve_app here (signals need the main thread) while ``client`` talks to it."""
    handler = _Listening()
    server_log = logging.getLogger("fleet_monitor.http.server")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    main = threading.get_ident()
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            assert handler.seen.wait(10)
            assert handler.url is not None
            client(handler.url)
        except BaseException as error:
            errors.append(error)
        finally:
            if stop:
                signal.pthread_kill(main, signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        with _restored_signal_handlers():
            serve_app(
                create_app(Settings(), store, readiness=readiness),
                Settings(port=0),
                readiness,
                load,
            )
    finally:
        driver.join(10)
        server_log.removeHandler(handler)
    if errors:
        raise errors[0]


def test_the_port_opens_before_the_fleet_loads_and_the_api_waits_for_it() -> None:
    readiness, store = Readiness(), MemoryStore()
    release = threading.Event()
    seen: list[tuple[str, int]] = []

    def load() -> None:
        assert release.wait(10)
        store.add_all(SAMPLE_DEVICES)

    def client(url: str) -> None:
        stats = f"{url}/api/v1/devices/{DEVICE}/stats"
        seen.append(("readyz", requests.get(f"{url}/readyz", timeout=5).status_code))
        seen.append(("healthz", requests.get(f"{url}/healthz", timeout=5).status_code))
        seen.append(("stats", requests.get(stats, timeout=5).status_code))
        release.set()
        deadline = time.monotonic() + 10
        while requests.get(f"{url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        seen.append(("stats", requests.get(stats, timeout=5).status_code))

    _serve_in_main_thread(load, client, store, readiness)
    assert seen == [("readyz", 503), ("healthz", 200), ("stats", 503), ("stats", 200)]
    assert readiness.state == "stopping"


def test_a_failing_load_stops_the_server_and_raises_its_error() -> None:
    def load() -> None:
        raise ValueError("journal.log: corrupt record at offset 42")

    def client(url: str) -> None:
        pass

    with pytest.raises(ValueError, match="offset 42"):
        _serve_in_main_thread(load, client, MemoryStore(), Readiness(), stop=False)


def test_sigterm_with_grace_turns_unready_keeps_serving_then_stops(tmp_path: Path) -> None:
    with live_server(tmp_path, ["--shutdown-grace", "2"]) as server:
        assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while requests.get(f"{server.url}/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stopping = requests.get(f"{server.url}/readyz", timeout=5)
        assert stopping.json() == {"status": "stopping", "ready": False}
        stats = requests.get(f"{server.url}/api/v1/devices/{DEVICE}/stats", timeout=5)
        assert stats.status_code == 200  # still answering while load balancers catch up
        started = time.monotonic()
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 3
        messages = [line["msg"] for line in server.log_lines()]
    assert "SIGTERM: /readyz answers 503; stopping in 2 s" in messages
    assert messages[-1] == "stopped"


def test_a_second_signal_ends_the_grace_at_once(tmp_path: Path) -> None:
    with live_server(tmp_path, ["--shutdown-grace", "60"]) as server:
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while requests.get(f"{server.url}/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=5) == 0


UPTIME_10K_STEPS = (
    f"/api/v1/devices/{DEVICE}/uptime"
    "?start=2024-01-01T00:00:00Z&end=2024-01-07T22:40:00Z&step=1m"  # 10,000 buckets
)


def _queue_up_slow_requests(url: str, count: int) -> list[socket.socket]:
    """``count`` requests for 10,000 uptime buckets each (about 60 ms of work), all sent."""
    for sent_at in ("2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"):
        body = json.dumps({"sent_at": sent_at})
        requests.post(f"{url}/api/v1/devices/{DEVICE}/heartbeat", data=body, timeout=5)
    slow = []
    for _ in range(count):
        sock = connect(url, timeout=60)
        sock.sendall(get(UPTIME_10K_STEPS))
        slow.append(sock)
    return slow


def test_probes_are_answered_while_the_only_worker_is_busy(tmp_path: Path) -> None:
    with sockets() as held, live_server(tmp_path, ["--threads", "1"]) as server:
        held.extend(_queue_up_slow_requests(server.url, 30))
        control = connect(server.url)  # an API request queued behind the slow ones
        control.sendall(get(f"/api/v1/devices/{DEVICE}/stats"))
        held.append(control)
        healthz = exchange(server.url, get("/healthz"))
        readyz = exchange(server.url, get("/readyz"))
        assert not is_closed(control)  # sent first, still waiting: the probes went ahead
        assert (healthz.status_line, healthz.body) == (
            "HTTP/1.1 200 OK",
            b'{"status":"ok","devices":5}\n',
        )
        assert (readyz.status_line, readyz.body) == (
            "HTTP/1.1 200 OK",
            b'{"status":"ready","ready":true}\n',
        )
        for sock in held[:-1]:
            assert read_answer(sock).status_line == "HTTP/1.1 200 OK"
        stats = read_answer(control)
        assert stats.body == b'{"uptime":0.01984126984126984,"avg_upload_time":"0s"}\n'


def test_device_writes_are_answered_while_every_reader_is_busy(tmp_path: Path) -> None:
    with sockets() as held, live_server(tmp_path, ["--threads", "1"]) as server:
        held.extend(_queue_up_slow_requests(server.url, 30))
        control = connect(server.url)  # a read queued behind the slow ones
        control.sendall(get(f"/api/v1/devices/{DEVICE}/stats"))
        held.append(control)
        body = b'{"sent_at": "2024-01-09T00:00:00Z"}'
        beat = exchange(
            server.url,
            b"POST /api/v1/devices/%s/heartbeat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (DEVICE.encode(), len(body), body),
        )
        assert not is_closed(control)  # sent first, still waiting: the write went ahead
        assert beat.status_line == "HTTP/1.1 204 NO CONTENT"
        for sock in held:
            assert read_answer(sock).status_line == "HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    ("options", "threads"),
    [
        ({}, 1),  # a write is CPU work only: one thread, more would only contend
        ({"threads": 1}, 1),
        ({"data_dir": Path("d"), "fsync": "everysec"}, 1),
        ({"data_dir": Path("d"), "fsync": "always"}, 8),  # each write waits for the disk
        ({"store": "redis://127.0.0.1:1/0"}, 8),  # each write waits for the engine
        ({"store": "redis://127.0.0.1:1/0", "threads": 3}, 3),
    ],
)
def test_the_write_lane_has_one_thread_unless_writes_wait(
    options: dict[str, object], threads: int
) -> None:
    assert write_threads(Settings(**options)) == threads  # type: ignore[arg-type]


def test_a_growing_task_queue_logs_one_line_per_10_s_with_the_count_held_back(
    tmp_path: Path,
) -> None:
    def queue_lines(server: LiveServer) -> list[dict[str, object]]:
        return [line for line in server.log_lines() if line["logger"] == "waitress.queue"]

    with sockets() as held, live_server(tmp_path, ["--threads", "1"]) as server:
        held.extend(_queue_up_slow_requests(server.url, 30))  # 29 "Task queue depth" warnings
        deadline = time.monotonic() + 10
        while not queue_lines(server):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first_seen = time.monotonic()
        for sock in held:
            assert read_answer(sock).status_line == "HTTP/1.1 200 OK"
        time.sleep(max(0.0, first_seen + THROTTLE_SECONDS + 0.2 - time.monotonic()))
        held.extend(_queue_up_slow_requests(server.url, 3))  # the queue grows again
        for sock in held[-3:]:
            assert read_answer(sock).status_line == "HTTP/1.1 200 OK"
        lines = queue_lines(server)
    assert len(lines) == 2
    assert str(lines[0]["msg"]).startswith("Task queue depth is ")
    held_back = lines[1]["suppressed"]
    assert isinstance(held_back, int) and held_back >= 1
    assert str(lines[1]["msg"]).endswith(f" [{held_back} more like this in the last 10 s]")


def _task(command: str, path: str | None, error: Exception | None = None) -> SimpleNamespace:
    return SimpleNamespace(requests=[SimpleNamespace(command=command, path=path, error=error)])


def test_each_request_goes_to_its_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher = LaneDispatcher(1)
    names = {id(dispatcher): "main", id(dispatcher.writes): "writes"}
    names[id(dispatcher.reserved)] = "reserved"
    lanes: list[str] = []
    monkeypatch.setattr(
        ThreadedTaskDispatcher, "add_task", lambda lane, task: lanes.append(names[id(lane)])
    )
    try:
        for task in (
            _task("POST", f"/api/v1/devices/{DEVICE}/heartbeat"),
            _task("POST", f"/api/v1/devices/{DEVICE}/stats"),
            _task("GET", f"/api/v1/devices/{DEVICE}/heartbeat"),
            _task("HEAD", f"/api/v1/devices/{DEVICE}/stats"),
            _task("POST", "/api/v1/events"),
            _task("POST", f"/api/v1/devices/{DEVICE}/heartbeat/x"),
            _task("POST", None),
            _task("GET", "/readyz"),
            _task("POST", f"/api/v1/devices/{DEVICE}/heartbeat", ValueError("bad request")),
            SimpleNamespace(requests=[]),
        ):
            LaneDispatcher.add_task(dispatcher, task)  # type: ignore[arg-type]
    finally:
        dispatcher.shutdown(timeout=5)
    assert lanes == [
        "writes",
        "writes",
        "main",
        "main",
        "main",
        "main",
        "main",
        "reserved",
        "reserved",
        "main",
    ]


@pytest.mark.parametrize(("fsync", "writers"), [("everysec", 1), ("always", 8)])
def test_the_server_gives_its_write_lane_the_threads_the_store_needs(
    tmp_path: Path, fsync: str, writers: int
) -> None:
    settings = Settings(port=0, host="127.0.0.1", data_dir=tmp_path, fsync=fsync)
    server = create_wsgi_server(create_app(settings, MemoryStore()), settings)
    dispatcher = server.task_dispatcher
    assert isinstance(dispatcher, LaneDispatcher)
    try:
        assert len(dispatcher.writes.threads) == writers
        assert len(dispatcher.threads) == len(dispatcher.reserved.threads) + 7 == 8
    finally:
        dispatcher.shutdown(timeout=5)
        server.close()
    assert not (dispatcher.threads or dispatcher.writes.threads or dispatcher.reserved.threads)
