"""The request tallies expose exactly what prometheus_client's own metrics would."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from fleet_monitor.http.metrics import DURATION_BUCKETS, NAMESPACE
from fleet_monitor.http.tallies import WRITE_COUNTERS, RequestTallies

HEARTBEAT = "/api/v1/devices/<device_id>/heartbeat"
# (route, method, status, seconds): on a bucket's bound, between bounds, past the last one
REQUESTS = [
    (HEARTBEAT, "POST", 204, 0.0005),
    (HEARTBEAT, "POST", 204, 0.0004),
    (HEARTBEAT, "POST", 404, 0.003),
    ("unmatched", "GET", 404, 2.5),
    ("unmatched", "GET", 404, 7.0),
    (HEARTBEAT, "POST", 204, 0.0),
]


def library_exposition() -> bytes:
    """The same observations through prometheus_client's Counter and Histogram (without
    ``_created`` series, as the service's :class:`Metrics` turns them off)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests",
        "HTTP requests answered, by route template, method and status.",
        ["route", "method", "status"],
        namespace=NAMESPACE,
        registry=registry,
    )
    durations = Histogram(
        "http_request_duration_seconds",
        "Time from receiving a request to its response, by route template.",
        ["route"],
        namespace=NAMESPACE,
        registry=registry,
        buckets=DURATION_BUCKETS,
    )
    writes = {
        name: Counter(name, text, namespace=NAMESPACE, registry=registry)
        for name, text in WRITE_COUNTERS
    }
    for route, method, status, seconds in REQUESTS:
        requests.labels(route, method, str(status)).inc()
        durations.labels(route).observe(seconds)
    writes["heartbeats"].inc(3)
    writes["heartbeat_duplicates"].inc(1)
    writes["uploads"].inc(1)
    return generate_latest(registry)


def test_the_exposition_is_the_librarys_own() -> None:
    registry = CollectorRegistry()
    tallies = RequestTallies(NAMESPACE, DURATION_BUCKETS)
    registry.register(tallies)
    for request in REQUESTS:
        tallies.request(*request)
    tallies.heartbeat(new_minute=True)
    tallies.heartbeat(new_minute=False)
    tallies.heartbeat(new_minute=True)
    tallies.upload()
    ours = generate_latest(registry)
    assert ours == library_exposition()
    assert (
        b'fleet_monitor_http_request_duration_seconds_bucket{le="0.0005",route="'
        + HEARTBEAT.encode()
        + b'"} 3.0'
        in ours
    )  # 0.0005 is counted in the bucket whose bound it equals


def test_an_empty_tally_shows_zero_counts() -> None:
    registry = CollectorRegistry()
    registry.register(RequestTallies(NAMESPACE, DURATION_BUCKETS))
    text = generate_latest(registry).decode()
    assert "# TYPE fleet_monitor_http_requests_total counter" in text
    assert "fleet_monitor_heartbeats_total 0.0" in text
    assert "fleet_monitor_heartbeat_duplicates_total 0.0" in text
    assert "fleet_monitor_uploads_total 0.0" in text
    assert "_bucket" not in text


def test_a_second_metric_of_the_same_name_is_refused() -> None:
    registry = CollectorRegistry()
    registry.register(RequestTallies(NAMESPACE, DURATION_BUCKETS))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("heartbeats", "again", namespace=NAMESPACE, registry=registry)


@pytest.fixture
def switch_often() -> Iterator[None]:
    """A thread switch every microsecond: without the lock, increments are lost at once."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.usefixtures("switch_often")
def test_threads_at_once_lose_no_count() -> None:
    tallies = RequestTallies(NAMESPACE, DURATION_BUCKETS)
    threads, each = 8, 5000
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for n in range(each):
            tallies.request(HEARTBEAT, "POST", 204, 0.001)
            tallies.heartbeat(new_minute=n % 2 == 0)
            tallies.upload()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    families = {family.name: family for family in tallies.collect()}
    total = threads * each
    (requests,) = families[f"{NAMESPACE}_http_requests"].samples
    assert requests.value == total
    durations = families[f"{NAMESPACE}_http_request_duration_seconds"].samples
    count = next(s for s in durations if s.name.endswith("_count"))
    assert count.value == total
    assert families[f"{NAMESPACE}_heartbeats"].samples[0].value == total
    assert families[f"{NAMESPACE}_heartbeat_duplicates"].samples[0].value == total // 2
    assert families[f"{NAMESPACE}_uploads"].samples[0].value == total
