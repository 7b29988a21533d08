"""The minute bitmap: set semantics, span, window counts and its memory."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from fleet_monitor.domain.bitmaps import CHUNK_MINUTES, FULL_CHUNK, MinuteSet


def test_empty() -> None:
    minutes = MinuteSet()
    assert len(minutes) == 0
    assert minutes.first is None
    assert minutes.last is None
    assert 5 not in minutes
    assert minutes.count_between(-(10**9), 10**9) == 0


def test_add_reports_new_minutes_only() -> None:
    minutes = MinuteSet()
    assert minutes.add(100) is True
    assert minutes.add(100) is False
    assert minutes.add(101) is True
    assert len(minutes) == 2
    assert 100 in minutes
    assert 102 not in minutes
    assert "100" not in minutes


def test_grows_both_ways_for_out_of_order_minutes() -> None:
    minutes = MinuteSet()
    for minute in (500, 10, 9_000, -3, 499):
        minutes.add(minute)
    assert (minutes.first, minutes.last, len(minutes)) == (-3, 9_000, 5)
    assert all(m in minutes for m in (500, 10, 9_000, -3, 499))


def test_extreme_minutes_cost_one_chunk_each() -> None:
    minutes = MinuteSet()
    minutes.add(-1_035_593_280)  # 0001-01-01
    minutes.add(4_223_371_679)  # 9999-12-31T23:59
    assert len(minutes) == 2
    assert minutes.nbytes() < 4 * CHUNK_MINUTES // 8


def test_matches_a_python_set() -> None:
    rng = random.Random(7)
    minutes, reference = MinuteSet(), set()
    for _ in range(5_000):
        minute = rng.randrange(-20_000, 20_000)
        assert minutes.add(minute) == (minute not in reference)
        reference.add(minute)
    assert len(minutes) == len(reference)
    assert (minutes.first, minutes.last) == (min(reference), max(reference))
    for _ in range(300):
        start = rng.randrange(-25_000, 25_000)
        end = start + rng.randrange(0, 15_000)
        assert minutes.count_between(start, end) == sum(start <= m < end for m in reference)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, 0, 0),
        (10, 5, 0),
        (0, 1, 1),
        (0, CHUNK_MINUTES, 2),
        (CHUNK_MINUTES - 1, CHUNK_MINUTES + 1, 2),
        (-(10**12), 10**12, 4),
        (CHUNK_MINUTES + 1, 3 * CHUNK_MINUTES, 0),
    ],
)
def test_count_between_chunk_edges(start: int, end: int, expected: int) -> None:
    minutes = MinuteSet()
    for minute in (0, CHUNK_MINUTES - 1, CHUNK_MINUTES, 5 * CHUNK_MINUTES):
        minutes.add(minute)
    assert minutes.count_between(start, end) == expected


def test_a_year_of_minutes_with_gaps_stays_under_100_kb() -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    minutes = MinuteSet()
    for minute in range(28_000_000, 28_000_000 + 365 * 24 * 60):
        if minute % 50:  # 2% missing: no chunk is ever full
            minutes.add(minute)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(minutes) == 525_600 - 10_512
    assert used < 100_000, used


def test_a_full_chunk_is_shared_and_still_answers_every_question() -> None:
    minutes = MinuteSet()
    base = 7 * CHUNK_MINUTES
    for minute in reversed(range(base - 3, base + CHUNK_MINUTES + 3)):  # any order fills it
        assert minutes.add(minute) is True
    assert minutes._chunks[7] is FULL_CHUNK
    assert minutes.add(base + 100) is False  # already in: nothing is written to the shared one
    assert FULL_CHUNK == b"\xff" * (CHUNK_MINUTES // 8)
    assert len(minutes) == CHUNK_MINUTES + 6
    assert (minutes.first, minutes.last) == (base - 3, base + CHUNK_MINUTES + 2)
    assert base + 17 in minutes
    assert minutes.count_between(base + 10, base + 20) == 10
    assert minutes.count_between(base - 10, base + CHUNK_MINUTES + 10) == CHUNK_MINUTES + 6


def test_a_chunk_one_minute_short_of_full_keeps_its_own_bitmap() -> None:
    minutes = MinuteSet()
    for minute in range(CHUNK_MINUTES - 1):
        minutes.add(minute)
    assert minutes._chunks[0] is not FULL_CHUNK
    assert CHUNK_MINUTES - 1 not in minutes
    minutes.add(CHUNK_MINUTES - 1)
    assert minutes._chunks[0] is FULL_CHUNK


def test_a_year_of_every_minute_costs_a_few_kilobytes() -> None:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    minutes = MinuteSet()
    for minute in range(28_000_000, 28_000_000 + 365 * 24 * 60):
        minutes.add(minute)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used < 12_000, used  # the index of 128 full chunks and two partial edge chunks


def test_bits_between_is_the_range_as_one_integer() -> None:
    minutes = MinuteSet()
    for minute in (-3, 5, CHUNK_MINUTES - 1, CHUNK_MINUTES, 3 * CHUNK_MINUTES + 7):
        minutes.add(minute)
    assert minutes.bits_between(-3, 6) == 1 | 1 << 8
    assert minutes.bits_between(5, 5) == 0
    bits = minutes.bits_between(0, 4 * CHUNK_MINUTES)
    assert [i for i in range(4 * CHUNK_MINUTES) if bits >> i & 1] == [
        5,
        CHUNK_MINUTES - 1,
        CHUNK_MINUTES,
        3 * CHUNK_MINUTES + 7,
    ]
    assert minutes.bits_between(CHUNK_MINUTES, CHUNK_MINUTES + 1) == 1
