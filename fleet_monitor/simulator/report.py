"""The simulator's verdict: each device's expected against actual stats, and the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet_monitor.simulator.scenarios import Expected
from fleet_monitor.simulator.sender import Sender, Totals


@dataclass(frozen=True)
class DeviceResult:
    """Expected against actual for one device."""

    device_id: str
    expected: Expected
    actual: Expected | None
    error: str | None

    @property
    def uptime_matches(self) -> bool:
        """Equal to 5 decimals, as clients compare."""
        return self.actual is not None and (
            f"{self.actual.uptime:.5f}" == f"{self.expected.uptime:.5f}"
        )

    @property
    def avg_matches(self) -> bool:
        """The Go duration strings are identical."""
        return (
            self.actual is not None and self.actual.avg_upload_time == self.expected.avg_upload_time
        )

    @property
    def matches(self) -> bool:
        """Both figures match."""
        return self.uptime_matches and self.avg_matches


def fetch_actual(sender: Sender, device_id: str, expected: Expected) -> DeviceResult:
    """GET the device's stats and pair them with what was expected."""
    response = sender.request("GET", f"/api/v1/devices/{device_id}/stats")
    if response is None:
        return DeviceResult(device_id, expected, None, "no response")
    if response.status_code != 200:
        return DeviceResult(device_id, expected, None, f"HTTP {response.status_code}")
    try:
        body = response.json()
        actual = Expected(float(body["uptime"]), str(body["avg_upload_time"]))
    except (ValueError, KeyError, TypeError):
        return DeviceResult(device_id, expected, None, "malformed stats body")
    return DeviceResult(device_id, expected, actual, None)


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def render_text(results: Sequence[DeviceResult], totals: Totals, wall_s: float) -> str:
    """The report: per device, Expected vs Actual, then the totals."""
    lines = []
    for result in results:
        expected, actual = result.expected, result.actual
        uptime = f"{actual.uptime:.5f}" if actual else result.error
        avg = actual.avg_upload_time if actual else result.error
        lines += [
            f"DeviceID: {result.device_id}",
            f"    Uptime:        Expected: {expected.uptime:.5f}  Actual: {uptime}"
            f"  {_mark(result.uptime_matches)}",
            f"    AvgUploadTime: Expected: {expected.avg_upload_time}  Actual: {avg}"
            f"  {_mark(result.avg_matches)}",
            "",
        ]
    matched = sum(r.matches for r in results)
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(totals.errors.items())) or "none"
    p50, p95, p99 = (totals.percentile_ms(p) for p in (50, 95, 99))
    latency = (
        f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms" if p50 and p95 and p99 else "-"
    )
    rate = totals.requests / wall_s if wall_s > 0 else 0.0
    lines += [
        f"Devices:   {matched} of {len(results)} match",
        f"Requests:  {totals.requests} ({totals.retries} retries)",
        f"Errors:    {errors}",
        f"Wall time: {wall_s:.3f} s ({rate:.1f} requests/s)",
        f"Latency:   {latency}",
    ]
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[DeviceResult], totals: Totals, wall_s: float) -> dict[str, Any]:
    """The same report as a JSON-ready dict."""

    def figures(value: Expected | None) -> dict[str, Any] | None:
        return (
            None
            if value is None
            else {
                "uptime": value.uptime,
                "avg_upload_time": value.avg_upload_time,
            }
        )

    return {
        "match": all(r.matches for r in results),
        "devices": [
            {
                "device_id": r.device_id,
                "expected": figures(r.expected),
                "actual": figures(r.actual),
                "error": r.error,
                "uptime_match": r.uptime_matches,
                "avg_upload_time_match": r.avg_matches,
                "match": r.matches,
            }
            for r in results
        ],
        "totals": {
            "requests": totals.requests,
            "attempts": totals.attempts,
            "retries": totals.retries,
            "errors": dict(sorted(totals.errors.items())),
            "wall_seconds": round(wall_s, 6),
            "requests_per_second": round(totals.requests / wall_s, 3) if wall_s > 0 else None,
            "latency_ms": {f"p{p}": totals.percentile_ms(p) for p in (50, 95, 99)},
        },
    }
