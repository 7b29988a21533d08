"""Row 11 (issue 16): 10,000 devices of one site going down in the same minute, through the
real ``serve`` (memory store) with a group rule and a per-device rule, a local receiver taking
the alerts: how many alerts it gets, the process's memory, and the heartbeat latency while
the rules are evaluated every second, beside the same service without alerts."""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.common import percentile, serve
from benchmarks.fleet_views import connection, send
from benchmarks.page import Row, row
from fleet_monitor.domain.timestamps import MINUTE_NS, format_rfc3339
from tests.support.receiver import receiver

DEVICES = 10_000
RULES = """
[channels.hook]
url = "signed+{url}/hook"
secret = "benchmark"

[[rules]]
name = "each device"
on = ["down", "recovered"]
channels = ["hook"]

[[group_rules]]
name = "the site"
group_by = "site"
threshold = 50
channels = ["hook"]
"""


def _heartbeat_p50(base: str, seconds: float) -> float:
    """Median milliseconds of one device's heartbeats sent back to back for ``seconds``."""
    conn = connection(base)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = json.dumps({"sent_at": format_rfc3339(time.time_ns())})
        started = time.perf_counter()
        conn.request(
            "POST", "/api/v1/devices/probe/heartbeat", body, {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        response.read()
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 204:
            raise RuntimeError(f"heartbeat: {response.status}")
    conn.close()
    return percentile(times, 50)


def _rss_kb(base: str) -> int:
    conn = connection(base)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    line = next(
        line for line in text.splitlines() if line.startswith("process_resident_memory_bytes ")
    )
    return int(float(line.split()[1]) // 1024)


def storm(workdir: Path, seconds: float = 8.0) -> dict[str, object]:
    """The storm, and the same without ``--alerts``."""
    devices = workdir / "storm.csv"
    ids = [f"dev-{n:05d}" for n in range(DEVICES)]
    devices.write_text("device_id,site\nprobe,elsewhere\n" + "".join(f"{d},plant\n" for d in ids))
    result: dict[str, object] = {"devices": DEVICES}
    now = time.time_ns() // MINUTE_NS
    with receiver() as hook:
        (workdir / "alerts.toml").write_text(RULES.format(url=hook.url))
        for name, extra in (
            ("without", []),
            ("with", ["--alerts", str(workdir / "alerts.toml"), "--alerts-every", "1"]),
        ):
            args = ["--expected-every", "2", "--grace", "1", *extra]
            with serve(workdir, devices=devices, extra=args) as base:
                send(base, [(d, now) for d in ids])  # all up; all down 3 s later
                rss_before = _rss_kb(base)
                result[f"{name}_p50_ms"] = round(_heartbeat_p50(base, seconds), 3)
                result[f"{name}_rss_growth_kb"] = _rss_kb(base) - rss_before
        with hook.lock:
            events = [json.loads(r.body)["event"] for r in hook.requests]
    result["alerts"] = len(events)
    result["group_alerts"] = events.count("group_down")
    result["ratio"] = round(float(result["with_p50_ms"]) / float(result["without_p50_ms"]), 3)  # type: ignore[arg-type]
    if result["group_alerts"] != 1 or result["alerts"] != 1:
        raise RuntimeError(f"the receiver got {events[:5]}…: not one group alert")
    return result


def rows(results: dict[str, dict[str, object]]) -> list[Row]:
    """Row 11, when measured."""
    if "alerts" not in results:
        return []
    r = results["alerts"]
    return [
        row(
            "11",
            f"{r['devices']:,} devices of one site down in the same second (issue 16): a group "
            "rule and a per-device rule evaluated every second, a local receiver; heartbeat p50 "
            "of another device meanwhile, without and with the rules",
            f"without alerts: p50 {r['without_p50_ms']} ms, memory "
            f"+{r['without_rss_growth_kb']:,} KB",
            f"with: p50 {r['with_p50_ms']} ms, memory +{r['with_rss_growth_kb']:,} KB; the "
            f"receiver got {r['alerts']} alert ({r['group_alerts']} group_down)",
            f"{r['ratio']}\N{MULTIPLICATION SIGN} (target \N{LESS-THAN OR EQUAL TO} 1.2: "
            f"{'met' if float(str(r['ratio'])) <= 1.2 else 'missed'})",
        )
    ]
