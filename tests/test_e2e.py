"""End to end: the real `fleet-monitor serve` process (waitress) over HTTP on a free port."""

from __future__ import annotations

import datetime as dt
import random
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.conftest import REPO, SAMPLE_DEVICES, live_server, run_cli

Request = tuple[str, str, dict[str, Any]]
START = dt.datetime(2024, 4, 2, 9, 0, tzinfo=dt.UTC)
# The SPEC's table: heartbeat minutes over a 480-minute span, uptime, average upload time.
EXPECTED = {
    "60-6b-44-84-dc-64": (479, 99.79166666666667, 187_893_379_134, "3m7.893379134s"),
    "b4-45-52-a2-f1-3c": (480, 100.0, 199_085_533_836, "3m19.085533836s"),
    "26-9a-66-01-33-83": (446, 92.91666666666667, 201_858_747_766, "3m21.858747766s"),
    "18-b8-87-e7-1f-06": (474, 98.75, 197_331_667_813, "3m17.331667813s"),
    "38-4e-73-e0-33-59": (479, 99.79166666666667, 209_226_522_788, "3m29.226522788s"),
}


def scenario(seed: int) -> list[Request]:
    """Every request of the sample store, with duplicates, in a shuffled (out-of-order) order."""
    rng = random.Random(seed)
    requests_: list[Request] = []
    for device, (minutes_seen, _, average, _) in EXPECTED.items():
        inner = rng.sample(range(1, 480), minutes_seen - 2)  # first and last minute are kept
        for minute in [0, 480, *inner]:
            at = START + dt.timedelta(minutes=minute, seconds=rng.randrange(60))
            offset = dt.timezone(dt.timedelta(hours=rng.choice([-5, 0, 2])))
            body: dict[str, Any] = {
                "sent_at": at.astimezone(offset).isoformat(timespec="microseconds")
            }
            copies = 2 if rng.random() < 0.1 else 1  # a device retrying
            requests_ += [(device, "heartbeat", body)] * copies
        uploads = [average + rng.randrange(-(10**10), 10**10) for _ in range(99)]
        uploads.append(average * 100 + 99 - sum(uploads))  # remainder 99: must truncate
        for upload_time in uploads:
            upload = {"sent_at": "0001-01-01T00:00:00Z", "upload_time": upload_time}
            requests_.append((device, "stats", upload))
    rng.shuffle(requests_)
    return requests_


def test_sample_fleet_replayed_from_threads(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        api = f"{server.url}/api/v1/devices"
        local = threading.local()

        def send(item: Request) -> int:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            device, kind, body = item
            response = local.session.post(f"{api}/{device}/{kind}", json=body, timeout=10)
            status: int = response.status_code
            return status

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(send, scenario(seed=2024)))
        assert set(statuses) == {204}
        for device, (_, uptime, _, average) in EXPECTED.items():
            response = requests.get(f"{api}/{device}/stats", timeout=10)
            assert response.status_code == 200
            assert response.json() == {"uptime": uptime, "avg_upload_time": average}


def test_errors_over_real_http(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        api = f"{server.url}/api/v1/devices"
        response = requests.post(f"{api}/nope/heartbeat", data="x", timeout=10)
        assert (response.status_code, response.json()) == (404, {"msg": "device not found"})
        response = requests.delete(f"{api}/{SAMPLE_DEVICES[0]}/stats", timeout=10)
        assert response.status_code == 405
        assert "GET" in response.headers["Allow"]
        big = b"{" + b" " * 70_000 + b"}"
        response = requests.post(f"{api}/{SAMPLE_DEVICES[0]}/heartbeat", data=big, timeout=10)
        assert response.status_code == 413
        assert response.json() == {"msg": "request body is larger than 65536 bytes"}
        assert requests.get(f"{server.url}/healthz", timeout=10).json() == {
            "status": "ok",
            "devices": 5,
        }


def test_sigterm_stops_cleanly_and_logs_json(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        requests.get(f"{server.url}/api/v1/devices/{SAMPLE_DEVICES[0]}/stats", timeout=10)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        lines = server.log_lines()
    messages = [line["msg"] for line in lines]
    assert messages[-1] == "stopped"
    [access] = [line for line in lines if line["logger"] == "fleet_monitor.access"]
    assert access["method"] == "GET"
    assert access["route"] == "/api/v1/devices/<device_id>/stats"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=10) == 0


def test_missing_devices_file_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--devices", str(tmp_path / "none.csv"), "--port", "0")
    assert result.returncode == 2
    assert (
        result.stderr == f"fleet-monitor: error: {tmp_path / 'none.csv'}: devices file not found\n"
    )


def test_malformed_devices_file_exits_2_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("device_id\nok-1\nnot ok\n")
    result = run_cli("serve", "--devices", str(path), "--port", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"fleet-monitor: error: {path}:3: invalid device id 'not ok': "
        "1 to 128 characters of A-Z a-z 0-9 . _ : -"
    ]


def test_bad_env_value_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleet_monitor", "serve"],
        cwd=REPO,
        env={"FLEET_MONITOR_PORT": "abc", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == "fleet-monitor: error: FLEET_MONITOR_PORT must be a whole number, got 'abc'\n"
    )


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        port = server.url.rsplit(":", 1)[1]
        result = run_cli("serve", "--port", port)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("fleet-monitor: error: cannot listen:")


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "serve" in result.stderr


def test_serve_help_lists_env_vars() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    assert "FLEET_MONITOR_MAX_BODY_BYTES" in result.stdout


def raw_exchange(port: int, requests_: list[bytes]) -> list[bytes]:
    """Send raw HTTP requests one after another on ONE connection; the raw answers."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for raw in requests_:
            sock.sendall(raw)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            answers.append(answer)
    return answers


def heartbeat_request(connection: str = "") -> bytes:
    body = b'{"sent_at": "2024-04-02T09:00:00Z"}'
    extra = f"Connection: {connection}\r\n" if connection else ""
    return (
        f"POST /api/v1/devices/{SAMPLE_DEVICES[0]}/heartbeat HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_204_keeps_the_connection_open(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        answers = raw_exchange(port, [heartbeat_request()] * 3)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 204 NO CONTENT"] * 3
    assert all(b"Connection: close" not in a and b"Content-Length" not in a for a in answers)


def test_connection_close_is_still_honoured(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        [answer] = raw_exchange(port, [heartbeat_request("close")])
    assert b"Connection: close" in answer


def test_serve_outside_the_checkout_serves_the_bundled_sample_fleet(tmp_path: Path) -> None:
    with live_server(tmp_path, cwd=tmp_path) as server:
        devices = requests.get(f"{server.url}/api/v1/devices", timeout=5).json()["devices"]
        assert sorted(d["device_id"] for d in devices) == sorted(SAMPLE_DEVICES)
        warnings = [line["msg"] for line in server.log_lines() if line["level"] == "warning"]
    assert warnings == [
        "no --devices and no ./devices.csv: using the bundled sample fleet "
        "(pass --devices FILE for yours)"
    ]


def test_a_devices_file_asked_for_must_exist(tmp_path: Path) -> None:
    result = run_cli("serve", "--devices", str(tmp_path / "fleet.csv"), cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr == f"fleet-monitor: error: {tmp_path / 'fleet.csv'}: devices file not found\n"
    )
