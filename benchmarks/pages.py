"""Row 10 (issue 17): the status pages over 10,000 devices, through the real ``serve`` (memory
store) over HTTP: the time of each page, median of several, as a browser would ask for it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.common import MINUTE_NS, serve
from benchmarks.fleet_views import connection, get, send
from benchmarks.page import Row, row

HISTORY = 100  # heartbeats a device, one every 29 minutes (about two days)
PAGES = (
    ("fleet", "/"),
    ("fleet_500", "/?limit=500"),
    ("fleet_minutes", "/?bar=1m"),
    ("group", "/status/site:site-07"),
    ("device", "/devices/dev-000001"),
)


def status_pages(workdir: Path, devices: int = 10_000, requests: int = 9) -> dict[str, object]:
    """Each page of :data:`PAGES` over ``devices`` devices in 50 sites: the median of
    ``requests`` seconds (after one) and its bytes."""
    path = workdir / "pages.csv"
    ids = [f"dev-{n:06d}" for n in range(devices)]
    path.write_text(
        "device_id,site\n" + "".join(f"{d},site-{n % 50:02d}\n" for n, d in enumerate(ids))
    )
    now = time.time_ns() // MINUTE_NS
    result: dict[str, object] = {"devices": devices}
    with serve(workdir, devices=path) as base:
        events = [(d, now - k * 29) for k in range(HISTORY) for d in ids]
        result["accepted"] = send(base, events)
        conn = connection(base)
        for name, page in PAGES:
            times = []
            for n in range(requests + 1):
                started = time.perf_counter()
                status, body = get(conn, page)
                if status != 200:
                    raise RuntimeError(f"GET {page}: {status} {body[:200]!r}")
                if n:
                    times.append(time.perf_counter() - started)
            result[f"{name}_s"] = round(statistics.median(times), 3)
            result[f"{name}_bytes"] = len(body)
        conn.close()
    return result


def rows(results: dict[str, dict[str, object]]) -> list[Row]:
    """Row 10, when measured."""
    if "pages" not in results:
        return []
    r = results["pages"]
    slowest = max(float(str(r[f"{name}_s"])) for name, _ in PAGES)
    return [
        row(
            "10",
            f"status pages over {r['devices']:,} devices in 50 sites ({HISTORY} heartbeats "
            "each), median of 9, over HTTP from the same machine",
            f"`/` (50 devices a page, bars of 1h): {r['fleet_s']} s, {r['fleet_bytes']:,} B; "
            f"`/?limit=500`: {r['fleet_500_s']} s, {r['fleet_500_bytes']:,} B",
            f"`/?bar=1m`: {r['fleet_minutes_s']} s; `/status/site:site-07` (200 devices, "
            f"the summary of the group): {r['group_s']} s; `/devices/ID`: {r['device_s']} s",
            f"target \N{LESS-THAN OR EQUAL TO} 1 s: {'met' if slowest <= 1 else 'missed'}",
        )
    ]
