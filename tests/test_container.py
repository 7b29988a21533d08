"""The container files, checked without a Docker engine: lint, and run what they would run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.conftest import REPO, live_server


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
