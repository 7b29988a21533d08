"""The simulator: scenarios, the sending machinery, and verdicts against real and fake servers."""

from __future__ import annotations

import email.utils
import io
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from fleet_monitor.config import Settings
from fleet_monitor.http.app import create_app
from fleet_monitor.simulator.scenarios import (
    ASSIGNMENT_FLEET,
    Event,
    GeneratorOptions,
    ScenarioError,
    assignment,
    expected_results,
    generate,
    load,
    save,
)
from fleet_monitor.simulator.sender import SharedRate, retry_delay, split_lanes
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import REPO, SAMPLE_DEVICES, live_server
from tests.support.fake_servers import free_port, reply, serving

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

SMALL = ["--minutes", "60", "--uploads", "10", "--concurrency", "4"]


def simulate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_monitor", "simulate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- scenarios ----------------------------------------------------------------------------


def test_assignment_profile_reproduces_the_spec_table() -> None:
    events = assignment()
    results = expected_results(ASSIGNMENT_FLEET, events)
    assert {d: (f"{r.uptime:.5f}", r.avg_upload_time) for d, r in results.items()} == {
        "60-6b-44-84-dc-64": ("99.79167", "3m7.893379134s"),
        "b4-45-52-a2-f1-3c": ("100.00000", "3m19.085533836s"),
        "26-9a-66-01-33-83": ("92.91667", "3m21.858747766s"),
        "18-b8-87-e7-1f-06": ("98.75000", "3m17.331667813s"),
        "38-4e-73-e0-33-59": ("99.79167", "3m29.226522788s"),
    }
    for device in ASSIGNMENT_FLEET:
        own = [e for e in events if e.device_id == device]
        uploads, heartbeats = own[:100], own[100:]
        assert all(e.kind == "upload" and e.sent_at == "0001-01-01T00:00:00Z" for e in uploads)
        assert all(0 < (e.upload_time or 0) <= 3600 * 10**9 for e in uploads)
        assert all(e.kind == "heartbeat" and e.sent_at.endswith(":00Z") for e in heartbeats)
        assert [e.sent_at for e in heartbeats] == sorted({e.sent_at for e in heartbeats})


def test_generated_scenario_shape() -> None:
    options = GeneratorOptions(minutes=100, uploads=7, missing_rate=0.1, duplicate_rate=0.1)
    events = generate(["a", "b"], options)
    heartbeats = [e for e in events if e.kind == "heartbeat"]
    assert sum(e.kind == "upload" for e in events) == 14
    assert len(heartbeats) != len({(e.device_id, e.sent_at) for e in heartbeats})  # duplicates
    assert any(":00Z" not in e.sent_at for e in heartbeats)  # seconds inside the minute
    assert all(10 * 10**9 <= (e.upload_time or 0) < 600 * 10**9 for e in events if e.upload_time)
    order = [e.sent_at for e in heartbeats if e.device_id == "a"]
    assert order != sorted(order)  # some out of order


def test_same_seed_gives_a_byte_identical_saved_scenario(tmp_path: Path) -> None:
    first, second, other = tmp_path / "1.jsonl", tmp_path / "2.jsonl", tmp_path / "3.jsonl"
    save(generate(SAMPLE_DEVICES, GeneratorOptions(seed=42)), first)
    save(generate(SAMPLE_DEVICES, GeneratorOptions(seed=42)), second)
    save(generate(SAMPLE_DEVICES, GeneratorOptions(seed=43)), other)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_scenario_round_trip(tmp_path: Path) -> None:
    events = generate(["a"], GeneratorOptions(minutes=10, uploads=3))
    save(events, tmp_path / "s.jsonl")
    assert load(tmp_path / "s.jsonl") == events
    first = (tmp_path / "s.jsonl").read_text().splitlines()[0]
    assert list(json.loads(first)) == ["device_id", "kind", "sent_at"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nope", "s.jsonl:2: Expecting value"),
        ("[]", "s.jsonl:2: expected a JSON object"),
        ('{"device_id": "a", "kind": "ping", "sent_at": "2024-04-02T09:00:00Z"}', "kind must be"),
        ('{"device_id": "a", "kind": "heartbeat", "sent_at": "yesterday"}', "sent_at is not an"),
        ('{"device_id": "a", "kind": "upload", "sent_at": "2024-04-02T09:00:00Z"}', "upload_time"),
        ('{"kind": "heartbeat", "sent_at": "2024-04-02T09:00:00Z"}', "device_id must be"),
    ],
)
def test_bad_scenario_lines(tmp_path: Path, line: str, message: str) -> None:
    good = '{"device_id": "a", "kind": "heartbeat", "sent_at": "2024-04-02T09:00:00Z"}'
    (tmp_path / "s.jsonl").write_text(f"{good}\n{line}\n")
    with pytest.raises(ScenarioError, match=message):
        load(tmp_path / "s.jsonl")


def test_lanes() -> None:
    events = [Event(d, "heartbeat", f"2024-04-02T09:0{i}:00Z") for i in range(3) for d in "ab"]
    by_device = split_lanes(events, 8, by_device=True)
    assert [[e.device_id for e in lane] for lane in by_device] == [["a"] * 3, ["b"] * 3]
    assert [len(lane) for lane in split_lanes(events, 4, by_device=False)] == [2, 2, 1, 1]


# --- the sending machinery ----------------------------------------------------------------


def test_token_bucket_paces_after_the_burst() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    bucket = SharedRate(rate=10, capacity=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        bucket.acquire()
    assert sleeps == pytest.approx([0.1, 0.2])  # two free tokens, then reservations
    now[0] = 10.0  # long idle: refills only up to capacity
    sleeps.clear()
    for _ in range(3):
        bucket.acquire()
    assert sleeps == pytest.approx([0.1])


def test_retry_after_seconds_and_date_are_honoured() -> None:
    rng = random.Random(1)
    response = requests.Response()
    response.headers["Retry-After"] = "3"
    assert retry_delay(response, 0, rng) == 3.0
    response.headers["Retry-After"] = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < retry_delay(response, 0, rng) <= 60
    del response.headers["Retry-After"]
    delays = [retry_delay(response, 3, rng) for _ in range(200)]
    assert min(delays) >= 0
    assert max(delays) <= 0.4  # full jitter under base * 2**3
    assert max(retry_delay(None, 30, rng) for _ in range(200)) <= 2.0  # capped


# --- against our real server --------------------------------------------------------------


def test_default_scenario_matches_our_server(tmp_path: Path, store_args: list[str]) -> None:
    with live_server(tmp_path, store_args) as server:
        result = simulate(
            "--url", server.url, "--duplicate-rate", "0.1", "--out-of-order", "0.2",
            "--report", str(tmp_path / "r.txt"), "--report-json", str(tmp_path / "r.json"),
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["match"] is True
    assert [d["device_id"] for d in report["devices"]] == list(SAMPLE_DEVICES)
    assert report["totals"]["errors"] == {}
    text = (tmp_path / "r.txt").read_text()
    assert text == result.stdout
    assert "DeviceID: 60-6b-44-84-dc-64\n    Uptime:        Expected: " in text
    assert "Devices:   5 of 5 match" in text


def test_assignment_profile_against_our_server(tmp_path: Path, store_args: list[str]) -> None:
    with live_server(tmp_path, store_args) as server:
        result = simulate("--url", server.url, "--profile", "assignment")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "DeviceID: 26-9a-66-01-33-83\n"
        "    Uptime:        Expected: 92.91667  Actual: 92.91667  ✓\n"
        "    AvgUploadTime: Expected: 3m21.858747766s  Actual: 3m21.858747766s  ✓\n"
    ) in result.stdout
    assert "Requests:  2863 (0 retries)" in result.stdout


def test_replaying_a_saved_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    with live_server(tmp_path) as server:
        first = simulate("--url", server.url, *SMALL, "--save-scenario", str(path))
    with live_server(tmp_path) as server:
        again = simulate("--url", server.url, "--scenario", str(path))
    assert (first.returncode, again.returncode) == (0, 0)
    assert first.stdout.split("Devices:")[0] == again.stdout.split("Devices:")[0]


# --- against fake servers -----------------------------------------------------------------


def test_retries_500_and_429_and_counts_uploads_once(tmp_path: Path) -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    real = create_app(Settings(), store)
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "POST":
            return real(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        key = environ.get("HTTP_IDEMPOTENCY_KEY") or body.decode()
        with lock:
            attempts[key] = attempts.get(key, 0) + 1
            attempt = attempts[key]
        environ["wsgi.input"] = io.BytesIO(body)
        if attempt == 1 and "HTTP_IDEMPOTENCY_KEY" in environ:
            list(real(environ, lambda *a: lambda b: None))  # applied, but the answer is lost
            return reply(start_response, "500 Internal Server Error", b'{"msg": "oops"}')
        if attempt == 1:
            return reply(start_response, "429 Too Many Requests", b"{}", [("Retry-After", "0")])
        return real(environ, start_response)

    with serving(flaky) as url:
        result = simulate("--url", url, *SMALL, "--report-json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    # every distinct POST failed once (a duplicate heartbeat repeats an earlier key)
    assert report["totals"]["retries"] == len(attempts) > 300
    assert all(count == 2 for key, count in attempts.items() if key.startswith("sim-"))
    assert report["totals"]["errors"] == {}
    assert all(store.snapshot(d).upload_count == 10 for d in SAMPLE_DEVICES)


def off_by_one_app() -> Any:
    store = MemoryStore(SAMPLE_DEVICES)
    real = create_app(Settings(), store)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ["PATH_INFO"]
        if environ["REQUEST_METHOD"] == "GET" and path.endswith("/stats"):
            snapshot = store.snapshot(path.split("/")[4])
            first, last = snapshot.first_minute, snapshot.last_minute
            assert first is not None and last is not None
            uptime = 100 * snapshot.heartbeat_minutes / (last - first + 1)  # the classic bug
            avg = json.loads(b"".join(real(environ, lambda *a: lambda b: None)))["avg_upload_time"]
            body = json.dumps({"uptime": uptime, "avg_upload_time": avg}).encode()
            return reply(start_response, "200 OK", body)
        return real(environ, start_response)

    return app


def test_off_by_one_server_is_reported_and_exits_1(tmp_path: Path) -> None:
    with serving(off_by_one_app()) as url:
        result = simulate("--url", url, "--profile", "assignment")
    assert result.returncode == 1
    assert "Uptime:        Expected: 99.79167  Actual: 99.58420  ✗" in result.stdout
    assert "AvgUploadTime: Expected: 3m7.893379134s  Actual: 3m7.893379134s  ✓" in result.stdout
    assert "Devices:   0 of 5 match" in result.stdout


def test_down_server_exits_2_with_one_line() -> None:
    port = free_port()
    result = simulate("--url", f"http://127.0.0.1:{port}", *SMALL)
    assert result.returncode == 2
    assert result.stderr == (
        f"fleet-monitor: error: cannot reach http://127.0.0.1:{port}: ConnectionError\n"
    )


def test_no_retry_on_other_4xx(tmp_path: Path) -> None:
    def refuse(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return reply(start_response, "400 Bad Request", b'{"msg": "no"}')

    with serving(refuse) as url:
        result = simulate("--url", url, *SMALL, "--report-json", str(tmp_path / "r.json"))
    assert result.returncode == 1
    totals = json.loads((tmp_path / "r.json").read_text())["totals"]
    assert totals["retries"] == 0
    assert totals["errors"] == {"400": totals["requests"]}


def test_rate_limit_holds_in_every_one_second_window() -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    real = create_app(Settings(), store)
    arrivals: list[float] = []
    lock = threading.Lock()

    def recording(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with lock:
            arrivals.append(time.monotonic())
        return real(environ, start_response)

    with serving(recording) as url:
        result = simulate(
            "--url", url, "--minutes", "20", "--uploads", "5", "--missing-rate", "0",
            "--duplicate-rate", "0", "--rate", "50", "--burst", "10", "--concurrency", "8",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    posts = sorted(arrivals[1:])  # the first arrival is the reachability check
    assert len(posts) >= 125 + 5
    busiest = max(sum(1 for t in posts if start <= t < start + 1.0) for start in posts)
    assert busiest <= 50 + 10
    assert posts[-1] - posts[0] >= (len(posts) - 10) / 50 - 0.2  # it really was paced


def test_unknown_device_in_scenario_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"device_id": "ghost", "kind": "heartbeat", "sent_at": "2024-04-02T09:00:00Z"}\n'
    )
    result = simulate("--scenario", str(path), "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert (
        result.stderr
        == "fleet-monitor: error: the scenario names device 'ghost' that is not in devices.csv\n"
    )


def test_bad_option_is_a_usage_error() -> None:
    result = simulate("--missing-rate", "2")
    assert result.returncode == 2
    assert "must be from 0 to 1" in result.stderr
