"""Load generation: wrk with a Lua script when installed, else a small Python generator."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HEARTBEAT_LUA = """\
-- POST a heartbeat for a new minute each time (minute buckets are what the service stores).
-- wrk embeds LuaJIT (Lua 5.1): no // operator, hence math.floor.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local minute = 0
request = function()
  minute = minute + 1
  local day = math.floor(minute / 1440)
  local body = string.format('{"sent_at": "%04d-01-%02dT%02d:%02d:00Z"}',
    2024 + math.floor(day / 28), 1 + day % 28, math.floor(minute / 60) % 24, minute % 60)
  return wrk.format(nil, "{path}", nil, body)
end
"""


FLEET_LUA = """\
-- POST heartbeats from {devices} devices in turn, each a new minute at each turn: a fleet.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local minute = math.floor(n / {devices})
  local day = math.floor(minute / 1440)
  local body = string.format('{"sent_at": "%04d-01-%02dT%02d:%02d:00Z"}',
    2024 + math.floor(day / 28), 1 + day % 28, math.floor(minute / 60) % 24, minute % 60)
  local path = string.format("/api/v1/devices/{prefix}%06d/heartbeat", n % {devices})
  return wrk.format(nil, path, nil, body)
end
"""
FLEET_PREFIX = "fleet-"


def fleet_ids(devices: int) -> list[str]:
    """The ids of a fleet of ``devices`` (as :func:`fleet_lua` names them)."""
    return [f"{FLEET_PREFIX}{n:06d}" for n in range(devices)]


def fleet_lua(devices: int) -> str:
    """The wrk script POSTing heartbeats from ``devices`` devices in turn."""
    return FLEET_LUA.replace("{devices}", str(devices)).replace("{prefix}", FLEET_PREFIX)


BATCH_LUA = """\
-- POST the same batch of events each time (its events are heartbeats of distinct minutes).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
"""


def batch_body(device_id: str, events: int) -> str:
    """A ``POST /api/v1/events`` body of ``events`` heartbeats, one a minute."""
    items = ",".join(
        f'{{"device_id":"{device_id}","type":"heartbeat",'
        f'"sent_at":"2024-01-{1 + n // 1440:02d}T{n // 60 % 24:02d}:{n % 60:02d}:00Z"}}'
        for n in range(events)
    )
    return f'{{"events":[{items}]}}'


def batch_lua(body: str) -> str:
    """The wrk script POSTing ``body`` each time."""
    return BATCH_LUA.replace("{body}", body)


@dataclass(frozen=True)
class LoadResult:
    """Requests per second and how many requests failed (non-2xx or socket errors)."""

    requests_per_second: float
    errors: int


def heartbeat_lua(path: str) -> str:
    """The wrk script POSTing heartbeats with a new minute each time to ``path``."""
    return HEARTBEAT_LUA.replace("{path}", path)


def parse_wrk(output: str) -> LoadResult:
    """Requests/sec and error count from wrk's summary."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return LoadResult(float(rate.group(1)), errors)


def run_wrk(
    url: str,
    seconds: int,
    connections: int,
    workdir: Path,
    body: str | None = None,
    *,
    fleet: int = 0,
) -> LoadResult:
    """Run wrk (one thread: the server has the other core) against ``url``: heartbeats of a
    new minute each time, or ``body`` each time, or (``fleet`` > 0) heartbeats of that many
    devices in turn (``url``'s path is then theirs)."""
    script = workdir / "load.lua"
    if fleet:
        script.write_text(fleet_lua(fleet))
    else:
        script.write_text(heartbeat_lua(urlsplit(url).path) if body is None else batch_lua(body))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(output)


def run_python(
    url: str, seconds: int, connections: int, body: str | None = None, *, fleet: int = 0
) -> LoadResult:
    """The fallback: ``connections`` keep-alive threads POSTing heartbeats (or ``body``) for
    ``seconds``; with ``fleet`` > 0, heartbeats of that many devices in turn."""
    ids = fleet_ids(fleet)
    parts = urlsplit(url)
    stop = time.monotonic() + seconds
    counts = [0] * connections
    errors = [0] * connections

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
        minute = index * 10_000_000
        while time.monotonic() < stop:
            minute += 1
            beat = f'{{"sent_at": "2024-01-01T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z"}}'
            try:
                path = parts.path
                if ids:
                    path = f"/api/v1/devices/{ids[minute % len(ids)]}/heartbeat"
                conn.request("POST", path, body or beat, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                counts[index] += 1
                errors[index] += response.status >= 300
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(sum(counts) / (time.monotonic() - started), sum(errors))


def load(
    url: str,
    seconds: int,
    connections: int,
    workdir: Path,
    body: str | None = None,
    *,
    fleet: int = 0,
) -> tuple[str, LoadResult]:
    """(generator name, result): wrk if it is on PATH, else the Python generator."""
    if shutil.which("wrk"):
        return "wrk", run_wrk(url, seconds, connections, workdir, body, fleet=fleet)
    return "python", run_python(url, seconds, connections, body, fleet=fleet)
