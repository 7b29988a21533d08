"""How the status pages write figures."""

from __future__ import annotations

from fleet_monitor.domain.readmodels import UptimeBucket
from fleet_monitor.domain.uploads import UploadAggregate
from fleet_monitor.http.page_format import (
    CHART_HEIGHT,
    age,
    bar_text,
    bucket_class,
    duration,
    instant,
    percent,
    upload_chart,
)

S = 10**9


def test_figures_in_words() -> None:
    assert [percent(p) for p in (100.0, 99.999, 0.5, None)] == [
        "100%",
        "99.99%",
        "0.50%",
        "\u2013",
    ]
    assert (instant(None), instant(0)) == ("never", "1970-01-01T00:00:00Z")
    assert (duration(None), duration(1_500_000_000)) == ("\u2013", "1.5s")
    now = 10**6 * S
    assert [age(now - s * S, now) for s in (0, 59, 60, 3599, 3600, 86400 * 2)] == [
        "0 s ago",
        "59 s ago",
        "1 min ago",
        "59 min ago",
        "1 h ago",
        "2 d ago",
    ]
    assert (age(now + 4 * S, now), age(None, now)) == ("in 4 s", "never")


def test_bar_buckets() -> None:
    bar = [
        UptimeBucket(0, 0, 0),
        UptimeBucket(1, 60, 60),
        UptimeBucket(2, 60, 3),
        UptimeBucket(3, 60, 0),
    ]
    assert [bucket_class(b) for b in bar] == ["n", "u", "p", "d"]
    assert bar_text(bar, "1h") == (
        "last 4 steps of 1h: 1 with every minute, 1 with some, 1 with none, 1 outside its history"
    )


def test_the_upload_chart_scales_to_the_largest_upload() -> None:
    uploads = [
        (0, UploadAggregate(2, 30 * S, 10 * S, 20 * S)),
        (1, UploadAggregate()),
        (2, UploadAggregate(1, 40 * S, 40 * S, 40 * S)),
    ]
    chart = upload_chart(uploads)
    assert chart.top_ns == 40 * S
    assert chart.points == [
        (1, CHART_HEIGHT * 0.75, CHART_HEIGHT * 0.625, CHART_HEIGHT * 0.5),
        (7, 0.0, 0.0, 0.0),
    ]
    assert chart.mean_line == "1,62.5 7,0.0"
    assert upload_chart([]).points == []
