"""Alerts end to end: the real service with an alerts file, a real local receiver, a device
that stops and comes back. Exactly one down (after expected_every + grace), its repeats, one
recovered, each signed; a receiver refusing twice gets each alert once; the log and the
counters say so."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import redis
import requests

from fleet_monitor.alerts.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from fleet_monitor.domain.timestamps import format_rfc3339
from tests.conftest import LiveServer, live_server, run_cli
from tests.support.receiver import Receiver, receiver

RULES = """
[channels.ops]
url = "signed+{url}/hook"
secret_env = "OPS_SECRET"

[[rules]]
name = "everything"
on = ["down", "recovered"]
repeat = {repeat}
channels = ["ops"]
"""


def start(
    tmp_path: Path,
    hook: Receiver,
    *,
    repeat: int = 0,
    data_dir: Path | None = None,
    store: str | None = None,
    extra_rules: str = "",
) -> AbstractContextManager[LiveServer]:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "devices.csv").write_text("device_id,site\ncam-1,paris\ncam-2,paris\n")
    (tmp_path / "alerts.toml").write_text(RULES.format(url=hook.url, repeat=repeat) + extra_rules)
    args = [
        "--devices", str(tmp_path / "devices.csv"),
        "--alerts", str(tmp_path / "alerts.toml"),
        "--alerts-every", "0.2",
        "--expected-every", "1",
        "--grace", "1",
        *(["--data-dir", str(data_dir)] if data_dir else []),
        *(["--store", store] if store else []),
    ]  # fmt: skip
    return live_server(tmp_path, args, env={"OPS_SECRET": "s3cret"})


def beat(server: LiveServer, device: str) -> None:
    body = {"sent_at": format_rfc3339(time.time_ns())}
    reply = requests.post(f"{server.url}/api/v1/devices/{device}/heartbeat", json=body, timeout=10)
    assert reply.status_code == 204


def alerts(hook: Receiver) -> list[tuple[str, str]]:
    with hook.lock:
        bodies = [json.loads(r.body) for r in hook.requests]
    return [(b["event"], b["subject"]) for b in bodies]


def wait_for(check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_a_device_down_then_back_is_one_down_and_one_recovered(tmp_path: Path) -> None:
    with receiver(500, 500) as hook, start(tmp_path, hook) as server:
        beat(server, "cam-1")
        stopped = time.monotonic()
        wait_for(lambda: ("down", "cam-1") in alerts(hook))
        assert time.monotonic() - stopped >= 2  # expected_every + grace
        wait_for(lambda: len(alerts(hook)) == 3)  # refused twice (backoff 1 s, 2 s), then taken
        time.sleep(1.5)  # and no other
        assert alerts(hook) == [("down", "cam-1")] * 3
        beat(server, "cam-1")
        wait_for(lambda: ("recovered", "cam-1") in alerts(hook))
        time.sleep(1)
        assert alerts(hook) == [("down", "cam-1")] * 3 + [("recovered", "cam-1")]
        for request in hook.requests:
            stamp, signature = request.headers[TIMESTAMP_HEADER], request.headers[SIGNATURE_HEADER]
            assert verify("s3cret", stamp, request.body, signature, now_s=time.time())
        log = requests.get(f"{server.url}/api/v1/alerts/events", timeout=10).json()
        assert log["pending"] == 0
        assert [(e["event"], e["result"], e["attempts"]) for e in log["events"]] == [
            ("recovered", "sent", 1),
            ("down", "sent", 3),
        ]
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert 'fleet_monitor_alerts_total{result="sent"} 2.0' in metrics
        assert 'fleet_monitor_alerts_total{result="retried"} 2.0' in metrics
        rules = requests.get(f"{server.url}/api/v1/alerts/rules", timeout=10).json()
        assert rules["channels"] == [
            {"name": "ops", "url": "signed+http://127.0.0.1/\u2026", "per_minute": 60}
        ]
    assert "cam-2" not in {subject for _, subject in alerts(hook)}  # never seen: new, no alert


def test_a_device_still_down_is_told_again_at_the_repeat(tmp_path: Path) -> None:
    with receiver() as hook, start(tmp_path, hook, repeat=2) as server:
        beat(server, "cam-1")
        wait_for(lambda: alerts(hook).count(("down", "cam-1")) == 2)
        with hook.lock:
            first, second = (r for r in hook.requests[:2])
        gap = int(second.headers[TIMESTAMP_HEADER]) - int(first.headers[TIMESTAMP_HEADER])
        assert 1 <= gap <= 4


def test_a_bad_alerts_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "alerts.toml").write_text("[[rules]]\nname = 3\n")
    done = run_cli("serve", "--port", "0", "--alerts", str(tmp_path / "alerts.toml"))
    assert done.returncode == 2
    assert f"{tmp_path / 'alerts.toml'}: rules[0].name must be a string" in done.stderr


def test_an_alert_pending_at_a_kill_is_delivered_after_the_restart_once(tmp_path: Path) -> None:
    """kill -9 while the receiver refuses the down alert: after the restart (same data dir)
    the same alert is delivered, once, and the outage is not told again."""
    data = tmp_path / "data"
    with receiver(*[500] * 1000) as hook:
        with start(tmp_path, hook, data_dir=data) as server:
            beat(server, "cam-1")
            wait_for(lambda: ("down", "cam-1") in alerts(hook))
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
        with hook.lock:
            hook.statuses.clear()  # now it takes them
        with start(tmp_path, hook, data_dir=data):
            wait_for(lambda: any(r.status == 200 for r in hook.requests))
            time.sleep(2)  # a few evaluations later: nothing new
        with hook.lock:
            ids = {json.loads(r.body)["id"] for r in hook.requests}
            taken = [r for r in hook.requests if r.status == 200]
    assert len(ids) == 1 and len(taken) == 1
    assert alerts(hook) == [("down", "cam-1")] * len(hook.requests)


def test_over_one_engine_one_process_sends_and_another_takes_over(
    tmp_path: Path, valkey_url: str
) -> None:
    """Two processes over one Valkey with the same rules: the down is sent once (by the
    holder of the lease); one is killed with -9, and the recovery is sent once, by whichever
    holds the lease then, carrying on from the state kept in the engine."""
    engine = redis.Redis.from_url(valkey_url)
    engine.flushall()
    engine.close()
    with receiver() as hook:
        with (
            start(tmp_path / "a", hook, store=valkey_url) as one,
            start(tmp_path / "b", hook, store=valkey_url) as two,
        ):
            beat(one, "cam-1")
            wait_for(lambda: ("down", "cam-1") in alerts(hook))
            time.sleep(1.5)  # both evaluate; one sends
            assert alerts(hook) == [("down", "cam-1")]
            one.process.send_signal(signal.SIGKILL)
            one.process.wait()

            # back, and kept up while the lease passes to the other (5 s at most)
            def back() -> bool:
                beat(two, "cam-1")
                return ("recovered", "cam-1") in alerts(hook)

            wait_for(back, 20)
            time.sleep(1)
        assert alerts(hook) == [("down", "cam-1"), ("recovered", "cam-1")]


def test_a_slow_upload_is_told(tmp_path: Path) -> None:
    with receiver() as hook:
        extra = '[[rules]]\nname = "slow"\non = ["upload_slow"]\nupload_above = 30\n'
        extra += 'channels = ["ops"]\n'
        with start(tmp_path, hook, extra_rules=extra) as server:

            def upload(seconds: int) -> None:
                body = {"sent_at": format_rfc3339(time.time_ns()), "upload_time": seconds * 10**9}
                url = f"{server.url}/api/v1/devices/cam-2/stats"
                assert requests.post(url, json=body, timeout=10).status_code == 204

            upload(10)
            time.sleep(0.6)  # seen: its uploads so far are the baseline, not alerted on
            upload(45)
            wait_for(lambda: ("upload_slow", "cam-2") in alerts(hook))
        with hook.lock:
            (slow,) = [json.loads(r.body) for r in hook.requests if b"upload_slow" in r.body]
    assert slow["detail"] == "1 upload(s) took 45.0 s on average"
