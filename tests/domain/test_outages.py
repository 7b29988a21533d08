"""Outages read from the bitmap: every run of missing minutes, exact, whatever the chunks."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from fleet_monitor.domain.bitmaps import CHUNK_MINUTES, MinuteSet
from fleet_monitor.domain.outages import Outage, OutageTotals, gaps, outage_page


def runs_of(minutes: set[int], start: int, end: int) -> list[tuple[int, int]]:
    """The obvious answer, one minute at a time."""
    runs: list[tuple[int, int]] = []
    for minute in range(start, end):
        if minute in minutes:
            continue
        if runs and runs[-1][1] == minute:
            runs[-1] = (runs[-1][0], minute + 1)
        else:
            runs.append((minute, minute + 1))
    return runs


def chunks_of(minutes: set[int], start: int, end: int) -> list[tuple[int, int]]:
    bitmap = MinuteSet()
    for minute in minutes:
        bitmap.add(minute)
    return bitmap.chunk_bits(start, end)


@pytest.mark.parametrize("seed", range(40))
def test_gaps_are_the_runs_of_missing_minutes(seed: int) -> None:
    rng = random.Random(seed)
    base = rng.randrange(0, 10**7) * CHUNK_MINUTES
    span = rng.choice([5, 100, CHUNK_MINUTES, 3 * CHUNK_MINUTES, 7 * CHUNK_MINUTES])
    density = rng.choice([0.0, 0.01, 0.5, 0.97, 1.0])
    minutes = {base + m for m in range(span) if rng.random() < density}
    if rng.random() < 0.5:  # a chunk in the middle never written
        hole = base + CHUNK_MINUTES
        minutes -= set(range(hole, hole + CHUNK_MINUTES))
    start = base + rng.randrange(0, max(1, span // 3))
    end = base + span - rng.randrange(0, max(1, span // 3))
    expected = runs_of(minutes, start, end)
    assert list(gaps(chunks_of(minutes, start, end), start, end)) == expected


def test_runs_across_chunk_edges_are_one_run() -> None:
    edge = 5 * CHUNK_MINUTES
    minutes = {edge - 10, edge + CHUNK_MINUTES + 3}
    start, end = edge - 10, edge + CHUNK_MINUTES + 10
    assert list(gaps(chunks_of(minutes, start, end), start, end)) == [
        (edge - 9, edge + CHUNK_MINUTES + 3),
        (edge + CHUNK_MINUTES + 4, end),
    ]


def test_no_chunks_is_one_run_and_a_full_window_none() -> None:
    assert list(gaps(iter([]), 10, 20)) == [(10, 20)]
    full = {m for m in range(CHUNK_MINUTES)}
    assert list(gaps(chunks_of(full, 0, CHUNK_MINUTES), 0, CHUNK_MINUTES)) == []


class Bitmap:
    """A store of one device's bitmap, for outage_page."""

    def __init__(self, minutes: set[int]) -> None:
        self.set = MinuteSet()
        for minute in minutes:
            self.set.add(minute)
        self.reads: list[tuple[int, int]] = []

    def heartbeat_chunks(self, device_id: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        self.reads.append((start, end))
        return iter(self.set.chunk_bits(start, end))


def page(
    minutes: set[int], now: int, window: tuple[int, int], **options: int | None
) -> tuple[list[Outage], int | None, OutageTotals]:
    store = Bitmap(minutes)
    found = outage_page(
        store,  # type: ignore[arg-type]  # only heartbeat_chunks is read
        "d",
        (min(minutes), max(minutes)),
        now,
        window,
        at_least=int(options.get("at_least") or 1),
        after=options.get("after"),
        limit=int(options.get("limit") or 100),
    )
    return found.outages, found.next_minute, found.totals


def test_a_page_the_open_outage_and_the_totals() -> None:
    # heartbeats at 100-104, 110, 112-119, then nothing until now (130)
    minutes = {*range(100, 105), 110, *range(112, 120)}
    outages, following, totals = page(minutes, 130, (0, 10**6))
    assert outages == [
        Outage(105, 110, False),
        Outage(111, 112, False),
        Outage(120, 130, True),  # minute 130 is not over: not counted
    ]
    assert following is None
    assert totals == OutageTotals(count=3, minutes=16, longest=10, watched=30)
    assert totals.mttr_minutes == 16 / 3
    assert totals.mtbf_minutes == (30 - 16) / 3


def test_min_pages_and_windows() -> None:
    minutes = {*range(100, 105), 110, *range(112, 120)}
    outages, _, totals = page(minutes, 130, (0, 10**6), at_least=5)
    assert outages == [Outage(105, 110, False), Outage(120, 130, True)]
    assert (totals.count, totals.minutes) == (2, 15)
    first, following, _ = page(minutes, 130, (0, 10**6), limit=2)
    assert first == [Outage(105, 110, False), Outage(111, 112, False)]
    assert following == 120
    rest, after_that, totals = page(minutes, 130, (0, 10**6), limit=2, after=following)
    assert rest == [Outage(120, 130, True)] and after_that is None
    assert totals.count == 3  # the window's, on every page
    cut, _, _ = page(minutes, 130, (107, 125))  # cut at the window's edges, not open
    assert cut == [Outage(107, 110, False), Outage(111, 112, False), Outage(120, 125, False)]


def test_a_late_heartbeat_fills_its_minute() -> None:
    minutes = {100, 102}
    assert page(minutes, 103, (0, 200))[0] == [Outage(101, 102, False)]
    assert page(minutes | {101}, 103, (0, 200))[0] == []


def test_a_device_that_sent_nothing_has_no_outage() -> None:
    found = outage_page(
        Bitmap(set()),  # type: ignore[arg-type]
        "d",
        (None, None),
        500,
        (0, 1000),
        at_least=1,
        after=None,
        limit=10,
    )
    assert found.outages == [] and found.totals == OutageTotals(0, 0, 0, 0)
    assert found.totals.mtbf_minutes is None and found.totals.mttr_minutes is None
