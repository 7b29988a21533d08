"""The bit-sliced per-minute counter against a plain list of counts."""

from __future__ import annotations

import random

import pytest

from fleet_monitor.domain.minute_counts import MinuteCounts


@pytest.mark.parametrize("bulk", [False, True])
def test_counts_follow_adds_and_subtracts_of_bitmaps(bulk: bool) -> None:
    rng = random.Random(15)
    span = 300
    counts, plain = MinuteCounts(1000, span, bulk=bulk), [0] * span
    added: list[int] = []
    for _ in range(400):
        if added and rng.random() < 0.3:
            bits = added.pop(rng.randrange(len(added)))
            counts.subtract(bits)
            sign = -1
        else:
            bits = rng.getrandbits(span) & rng.getrandbits(span)
            counts.add(bits)
            added.append(bits)
            sign = 1
        for i in range(span):
            plain[i] += sign * (bits >> i & 1)
        if rng.random() < 0.2:
            minute = rng.randrange(1000, 1300)
            counts.add_minute(minute)
            plain[minute - 1000] += 1
            added.append(1 << (minute - 1000))
        if bulk and rng.random() < 0.05:
            counts.finish_bulk()
        start, end = sorted(rng.randrange(900, 1400) for _ in range(2))
        expected = sum(plain[max(start, 1000) - 1000 : max(min(end, 1300) - 1000, 0)])
        assert counts.totals([(start, end)])[0] == expected
    assert [counts.count(1000 + i) for i in range(span)] == plain


def test_a_count_grows_past_every_power_of_two() -> None:
    counts = MinuteCounts(0, 10)
    for n in range(1, 1025):
        counts.add_minute(3)
        assert counts.count(3) == n
    assert len(counts.planes) == 11  # 1024 needs bit 10
    for _ in range(1024):
        counts.subtract(1 << 3)
    assert (counts.count(3), counts.planes) == (0, [])


def test_minutes_outside_the_span_are_not_counted() -> None:
    counts = MinuteCounts(100, 10)
    for minute in (99, 100, 109, 110, -5, 10**12):
        counts.add_minute(minute)
    assert counts.totals([(0, 10**13), (100, 101), (109, 110), (105, 105), (120, 110)]) == [
        2,
        1,
        1,
        0,
        0,
    ]
    assert counts.end == 110


def test_a_count_never_falls_below_zero() -> None:
    for bulk in (False, True):
        counts = MinuteCounts(0, 8, bulk=bulk)
        counts.add(0b0110)
        counts.add(0b0100)
        with pytest.raises(ValueError, match="below 0"):
            counts.subtract(0b0101)
        assert [counts.count(m) for m in range(4)] == [0, 1, 2, 0]  # left as it was
