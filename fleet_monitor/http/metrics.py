"""Prometheus metrics: request and domain counters, and fleet gauges computed at scrape time.

Each :class:`Metrics` has its own registry (no process-wide state), holding the library's
process, platform and GC collectors beside ours, so two apps in one process never mix counts.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet_monitor.domain.timestamps import NS_PER_SECOND
from fleet_monitor.http.reads import FleetSummaries
from fleet_monitor.http.tallies import RequestTallies
from fleet_monitor.store.protocol import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_GROUPS = 100  # label values exported by --metrics-group-by; the rest: _other
NAMESPACE = "fleet_monitor"
UNMATCHED_ROUTE = "unmatched"  # the route label of a request no route matched
# From 0.5 ms: a heartbeat is answered in well under a millisecond.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FleetCollector(Collector):
    """Gauges of the fleet, computed from the records at each scrape.

    The store's snapshots are read one device at a time (the memory store holds its fleet lock
    only to copy the list of devices), so writes go on during a scrape of any size.
    """

    def __init__(self, store: Store, summaries: FleetSummaries, per_device: bool) -> None:
        self._store = store
        self._summaries = summaries
        self._per_device = per_device

    def describe(self) -> list[Metric]:
        """Nothing: the registry then calls :meth:`collect` at each scrape only."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The fleet's gauges now, and each device's when ``per_device`` is on."""
        summary = self._summaries.get()
        for name, help_text, value in (
            ("devices_registered", "Devices in the fleet.", summary.devices),
            ("devices_online", "Devices whose latest heartbeat is recent.", summary.online),
            ("devices_offline", "Devices whose latest heartbeat is too old.", summary.offline),
            ("devices_never_seen", "Devices without any heartbeat.", summary.never_seen),
            (
                "fleet_avg_uptime_percent",
                "Mean uptime of the devices that sent a heartbeat.",
                summary.avg_uptime,
            ),
            (
                "history_bytes",
                "Estimated bytes of history the fleet holds (see --max-fleet-bytes).",
                self._store.history_bytes(),
            ),
        ):
            yield GaugeMetricFamily(f"{NAMESPACE}_{name}", help_text, value=value)
        states = GaugeMetricFamily(
            f"{NAMESPACE}_devices_by_state",
            "Devices by state (new, up, late, down: on when their latest heartbeat arrived).",
            labels=["state"],
        )
        for state, count in summary.states.items():
            states.add_metric([state], count)
        yield states
        if summary.groups:
            yield self._group_gauges(summary.groups)
        if self._per_device:
            yield from self._device_gauges()

    @staticmethod
    def _group_gauges(groups: dict[str | None, dict[str, int]]) -> Metric:
        """Devices by group and state: the first :data:`MAX_GROUPS` values of the label (in
        order), the rest summed as ``_other``, devices without it as ``_none``."""
        gauge = GaugeMetricFamily(
            f"{NAMESPACE}_group_devices",
            "Devices by the value of the --metrics-group-by label and by state.",
            labels=["group", "state"],
        )
        named = sorted(value for value in groups if value is not None)
        totals: dict[str, dict[str, int]] = {}
        for value in named[:MAX_GROUPS]:
            totals[value] = groups[value]
        for value in named[MAX_GROUPS:]:
            other = totals.setdefault("_other", dict.fromkeys(groups[value], 0))
            for state, count in groups[value].items():
                other[state] += count
        if None in groups:
            totals["_none"] = groups[None]
        for value, counts in totals.items():
            for state, count in counts.items():
                gauge.add_metric([value, state], count)
        return gauge

    def _device_gauges(self) -> Iterator[Metric]:
        uptime = GaugeMetricFamily(
            f"{NAMESPACE}_device_uptime_percent",
            "A device's uptime (the stats endpoint's value).",
            labels=["device_id"],
        )
        last = GaugeMetricFamily(
            f"{NAMESPACE}_device_last_heartbeat_timestamp_seconds",
            "sent_at of a device's latest heartbeat, in Unix seconds (devices never seen: none).",
            labels=["device_id"],
        )
        for snapshot in self._store.snapshots():
            uptime.add_metric([snapshot.device_id], snapshot.uptime)
            if snapshot.last_heartbeat_ns is not None:
                last.add_metric([snapshot.device_id], snapshot.last_heartbeat_ns / NS_PER_SECOND)
        yield uptime
        yield last


class Metrics:
    """The service's metrics and their registry."""

    def __init__(
        self,
        store: Store,
        summaries: FleetSummaries,
        *,
        per_device: bool = False,
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output for nothing
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.tallies = RequestTallies(NAMESPACE, DURATION_BUCKETS)
        registry.register(self.tallies)
        self._rejected = Counter(
            "rejected_requests",
            "Requests answered with a 4xx or 503, by reason.",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._alerts = Counter(
            "alerts",
            "Alert deliveries by result: sent, failed (given up), retried (a try refused), "
            "dropped (queue full), suppressed (held back by a group alert).",
            ["result"],
            namespace=NAMESPACE,
            registry=registry,
        )
        registry.register(FleetCollector(store, summaries, per_device))

    def heartbeat_accepted(self, new_minute: bool) -> None:
        """Count an accepted heartbeat, and a duplicate when its minute was known."""
        self.tallies.heartbeat(new_minute)

    def upload_accepted(self) -> None:
        """Count an accepted (newly recorded) upload."""
        self.tallies.upload()

    def alert(self, result: str) -> None:
        """Count an alert delivery's ``result``."""
        self._alerts.labels(result).inc()

    def rejected(self, reason: str) -> None:
        """Count a request refused for ``reason`` (a fixed label such as ``invalid_json``)."""
        self._rejected.labels(reason).inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        self.tallies.request(route, method, status, seconds)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)
