"""The server's life cycle: port open before the fleet loads, ready after, grace on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from fleet_monitor.config import Settings
from fleet_monitor.http.app import create_app
from fleet_monitor.http.readiness import Readiness
from fleet_monitor.server import serve_app
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES, live_server


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
    server_log = logging.getLogger("fleet_monitor.server")
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
