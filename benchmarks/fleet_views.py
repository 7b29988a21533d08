"""Rows 9a and 9b (issue 15): outages of a year with 10,000 gaps, and the fleet grouped by a
label over 100,000 devices, each through the real ``serve`` (memory store) over HTTP.

Histories are sent through ``POST /api/v1/events`` (batches of 1,000 heartbeats), as devices
would send them; the figures are taken from one keep-alive connection after a warm-up.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import MINUTE_NS, percentile, serve
from benchmarks.page import Row, row
from fleet_monitor.domain.timestamps import format_minute

YEAR_START = 28_401_120  # 2024-01-01T00:00Z, in minutes
YEAR = 366 * 1440  # 2024's minutes
GAPS = 10_000
BATCH = 1000


def connection(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=120)


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def send(base: str, events: Iterable[tuple[str, int]]) -> int:
    """POST ``(device, minute)`` heartbeats in batches of :data:`BATCH`; how many accepted."""
    conn = connection(base)
    accepted = 0
    batch: list[dict[str, str]] = []

    def flush() -> None:
        nonlocal accepted
        body = json.dumps({"events": batch})
        conn.request("POST", "/api/v1/events", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        reply = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"batch: {response.status} {reply}")
        accepted += reply["accepted"]
        batch.clear()

    for device, minute in events:
        batch.append({"device_id": device, "type": "heartbeat", "sent_at": format_minute(minute)})
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    conn.close()
    return accepted


def _timed(base: str, path: str, requests: int, warmup: int) -> tuple[list[float], int]:
    """Milliseconds of each of ``requests`` GETs of ``path`` after ``warmup`` of them, and the
    reply's bytes."""
    conn = connection(base)
    times: list[float] = []
    size = 0
    for index in range(warmup + requests):
        started = time.perf_counter()
        status, body = get(conn, path)
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        if index >= warmup:
            times.append(elapsed)
        size = len(body)
    conn.close()
    return times, size


def _year_with_gaps() -> Iterator[tuple[str, int]]:
    """A heartbeat every minute of 2024 but one minute in every 52 (10,000 gaps)."""
    missing = {YEAR_START + 26 + 52 * n for n in range(GAPS)}
    for minute in range(YEAR_START, YEAR_START + YEAR):
        if minute not in missing:
            yield "year", minute


def outages(workdir: Path, requests: int = 200) -> dict[str, object]:
    """9a: ``GET …/outages`` of a device with 2024's minutes and 10,000 one-minute gaps: p50
    and p99 latency and bytes of the first page at ``limit=100`` and at ``limit=1000``, and of
    a page deep in the year (after the 9,000th outage)."""
    devices = workdir / "year.csv"
    devices.write_text("device_id\nyear\n")
    window = "start=2024-01-01T00:00:00Z&end=2025-01-01T00:00:00Z"
    result: dict[str, object] = {"gaps": GAPS}
    with serve(workdir, devices=devices) as base:
        started = time.perf_counter()
        result["accepted"] = send(base, _year_with_gaps())
        result["load_s"] = round(time.perf_counter() - started, 1)
        conn = connection(base)
        _, first = get(conn, f"/api/v1/devices/year/outages?{window}&limit=1000")
        reply = json.loads(first)
        if reply["totals"]["count"] != GAPS:
            raise RuntimeError(f"expected {GAPS} outages, found {reply['totals']['count']}")
        cursor = reply["next"]
        for _ in range(8):  # to the 9,001st
            _, page = get(conn, f"/api/v1/devices/year/outages?{window}&limit=1000&cursor={cursor}")
            cursor = json.loads(page)["next"]
        conn.close()
        for name, query in (
            ("page_100", f"{window}&limit=100"),
            ("page_1000", f"{window}&limit=1000"),
            ("deep_100", f"{window}&limit=100&cursor={cursor}"),
        ):
            times, size = _timed(base, f"/api/v1/devices/year/outages?{query}", requests, 20)
            result[f"{name}_p50_ms"] = round(percentile(times, 50), 2)
            result[f"{name}_p99_ms"] = round(percentile(times, 99), 2)
            result[f"{name}_bytes"] = size
    return result


def group_by(
    workdir: Path, devices: int = 100_000, groups: int = 50, requests: int = 5
) -> dict[str, object]:
    """9b: ``GET /fleet?group_by=site`` over ``devices`` devices in ``groups`` sites (a devices
    file with a site column), each with a heartbeat 20 days and one 1 hour before now.

    The fleet is live: before each of ``requests`` reads, 10,000 devices send a heartbeat of
    a new minute, and each read must count exactly those more in the last 24 h. Measured:
    the first read (which makes the group index), the median of the others, the heartbeats'
    rate before and after the index exists, ``GET /fleet`` and ``GET
    /fleet/outages?group_by=site`` (the last 24 h)."""
    path = workdir / "sites.csv"
    ids = [f"dev-{n:06d}" for n in range(devices)]
    path.write_text(
        "device_id,site\n" + "".join(f"{d},site-{n % groups:02d}\n" for n, d in enumerate(ids))
    )
    now = time.time_ns() // MINUTE_NS
    result: dict[str, object] = {"devices": devices, "groups": groups}
    live = ids[: min(devices, 10_000)]
    query = "/api/v1/fleet?group_by=site"
    with serve(workdir, devices=path) as base:
        started = time.perf_counter()
        events = [(d, now - 20 * 1440) for d in ids] + [(d, now - 60) for d in ids]
        result["accepted"] = send(base, events)
        result["load_s"] = round(time.perf_counter() - started, 1)
        before = [_timed_send(base, [(d, now - 52 + n) for d in live]) for n in range(3)]
        conn = connection(base)
        started = time.perf_counter()
        seen = _day_heartbeats(get(conn, query)[1], groups, devices)
        result["first_s"] = round(time.perf_counter() - started, 3)
        times, after = [], []
        for n in range(requests):
            after.append(_timed_send(base, [(d, now - 40 + n) for d in live]))
            started = time.perf_counter()
            status, body = get(conn, query)
            times.append(time.perf_counter() - started)
            counted = _day_heartbeats(body, groups, devices)
            if status != 200 or counted != seen + len(live):
                raise RuntimeError(f"group_by counted {counted}, not {seen} + {len(live)}")
            seen = counted
        conn.close()
        result["group_by_s"] = round(statistics.median(times), 3)
        result["group_by_bytes"] = len(body)
        result["heartbeats_before_per_s"] = round(len(live) / statistics.median(before))
        result["heartbeats_after_per_s"] = round(len(live) / statistics.median(after))
        for name, other in (
            ("site_outages", "/api/v1/fleet/outages?group_by=site"),
            ("summary", "/api/v1/fleet"),
        ):
            times_ms, size = _timed(base, other, requests, 1)
            result[f"{name}_s"] = round(statistics.median(times_ms) / 1000, 3)
            result[f"{name}_bytes"] = size
    return result


def _timed_send(base: str, events: list[tuple[str, int]]) -> float:
    """Seconds to send ``events`` (each must be accepted)."""
    started = time.perf_counter()
    if send(base, events) != len(events):
        raise RuntimeError("heartbeats of a new minute were not all accepted")
    return time.perf_counter() - started


def _day_heartbeats(body: bytes, groups: int, devices: int) -> int:
    """The heartbeat minutes of the last 24 h a group_by reply counts over all groups (and a
    check that its groups hold the fleet)."""
    reply: dict[str, Any] = json.loads(body)
    if len(reply["groups"]) != groups or sum(g["devices"] for g in reply["groups"]) != devices:
        raise RuntimeError("the groups do not hold the fleet")
    total = 0
    for group in reply["groups"]:  # uptime = 100 h / (h + down)
        uptime, down = group["uptime"]["24h"], group["downtime_minutes"]["24h"]
        total += round(uptime * down / (100 - uptime))
    return total


def rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """Rows 9a and 9b for the results present."""
    out: list[Row] = []
    if "outages" in results:
        r = results["outages"]
        out.append(
            row(
                "9a",
                f"`GET …/outages` of a device with a year of minutes and {r['gaps']:,} "
                f"one-minute gaps (issue 15; history sent as batches in {r['load_s']} s); every "
                "page counts the whole year's totals",
                f"first page, `limit=100`: p50 {r['page_100_p50_ms']} ms, p99 "
                f"{r['page_100_p99_ms']} ms, {r['page_100_bytes']:,} B",
                f"`limit=1000`: p50 {r['page_1000_p50_ms']} ms, {r['page_1000_bytes']:,} B; "
                f"a page after the 9,000th: p50 {r['deep_100_p50_ms']} ms",
                "\N{EN DASH}",
            )
        )
    if "group_by" in results:
        r = results["group_by"]
        out.append(
            row(
                "9b",
                f"`GET /fleet?group_by=site` over {r['devices']:,} devices in {r['groups']} "
                "sites (a devices file with a site column; two heartbeats each), median of 5 "
                "reads, each after 10,000 heartbeats of a new minute (counted exactly)",
                f"`GET /fleet` (no groups): {r['summary_s']} s; heartbeats before the group "
                f"index: {r['heartbeats_before_per_s']:,}/s",
                f"`group_by`: {r['group_by_s']} s ({r['group_by_bytes']:,} B), the first "
                f"(making the index) {r['first_s']} s; heartbeats with the index: "
                f"{r['heartbeats_after_per_s']:,}/s; `/fleet/outages?group_by=site` (24 h): "
                f"{r['site_outages_s']} s",
                f"target \N{LESS-THAN OR EQUAL TO} 0.5 s: "
                f"{'met' if r['group_by_s'] <= 0.5 else 'missed'}",
            )
        )
    return out
