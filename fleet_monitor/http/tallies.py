"""The counts every request updates, kept as plain numbers and exposed at each scrape.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` each take a lock per value and
check the metric first: a heartbeat paid five such updates (its request, its duration's bucket
and sum, the heartbeat counter), a fifth of its cost in the service (row 1 of
``benchmarks/results.md``). Here a request takes one lock for its request count and duration,
and an accepted write one for its counter; :meth:`RequestTallies.collect` turns the numbers
into the same families, names, labels and values as the library's own metrics would.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# name (without _total), help: the counters of accepted writes
WRITE_COUNTERS = (
    ("heartbeats", "Heartbeats accepted."),
    ("heartbeat_duplicates", "Accepted heartbeats whose minute the device already had."),
    ("uploads", "Upload stats records accepted."),
)


class RequestTallies(Collector):
    """Requests answered, by route template, method and status; their durations, by route
    template, in ``buckets`` (upper bounds in seconds, ascending); accepted writes. All under
    ``namespace``. Safe from any thread; a scrape copies the numbers under the same lock."""

    def __init__(self, namespace: str, buckets: Sequence[float]) -> None:
        self._namespace = namespace
        self._bounds = (*buckets, float("inf"))
        self._les = [floatToGoString(bound) for bound in self._bounds]  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        # route -> a count per bucket (not cumulative), then the sum of the durations
        self._durations: dict[str, list[float]] = {}
        self._writes = dict.fromkeys((name for name, _ in WRITE_COUNTERS), 0)

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        index = bisect.bisect_left(self._bounds, seconds)  # the first bound >= seconds
        key = (route, method, status)
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._durations.get(route)
            if histogram is None:
                histogram = self._durations[route] = [0.0] * (len(self._bounds) + 1)
            histogram[index] += 1
            histogram[-1] += seconds

    def heartbeat(self, new_minute: bool) -> None:
        """Count an accepted heartbeat, and a duplicate when its minute was known."""
        with self._lock:
            self._writes["heartbeats"] += 1
            if not new_minute:
                self._writes["heartbeat_duplicates"] += 1

    def upload(self) -> None:
        """Count an accepted (newly recorded) upload."""
        with self._lock:
            self._writes["uploads"] += 1

    def describe(self) -> list[Metric]:
        """The families without samples: the registry reserves their names (a second metric
        of the same name is refused) and calls :meth:`collect` at each scrape."""
        return list(self._families({}, {}, dict.fromkeys(self._writes, 0)))

    def collect(self) -> Iterator[Metric]:
        """The counts now, as Prometheus metric families (never ``_created`` series: the
        service turns them off for the library's metrics too)."""
        with self._lock:
            requests = dict(self._requests)
            durations = {route: list(values) for route, values in self._durations.items()}
            writes = dict(self._writes)
        return self._families(requests, durations, writes)

    def _families(
        self,
        requests: dict[tuple[str, str, int], int],
        durations: dict[str, list[float]],
        writes: dict[str, int],
    ) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            f"{self._namespace}_http_requests",
            "HTTP requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in requests.items():
            counter.add_metric([route, method, str(status)], count)
        yield counter
        histogram = HistogramMetricFamily(
            f"{self._namespace}_http_request_duration_seconds",
            "Time from receiving a request to its response, by route template.",
            labels=["route"],
        )
        for route, values in durations.items():
            cumulative, buckets = 0.0, []
            for le, in_bucket in zip(self._les, values[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((le, cumulative))
            histogram.add_metric([route], buckets, values[-1])
        yield histogram
        for name, help_text in WRITE_COUNTERS:
            yield CounterMetricFamily(f"{self._namespace}_{name}", help_text, value=writes[name])
