"""Per-minute upload aggregates (count, sum, min, max), compact and ordered by minute.

Any window and step can be answered from these without keeping each upload. The minutes are
kept sorted in parallel ``array``s (about 40 bytes a minute that saw uploads), so a window is
found by bisection; uploads arriving in time order append at the end.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass


@dataclass(frozen=True)
class UploadAggregate:
    """Count, sum, min and max of upload times (nanoseconds) over some minutes."""

    count: int = 0
    sum_ns: int = 0
    min_ns: int | None = None
    max_ns: int | None = None

    @property
    def avg_ns(self) -> int | None:
        """The truncated mean, or None without uploads."""
        return self.sum_ns // self.count if self.count else None

    def __add__(self, other: UploadAggregate) -> UploadAggregate:
        if not other.count:
            return self
        if not self.count:
            return other
        assert self.min_ns is not None and self.max_ns is not None  # count > 0
        assert other.min_ns is not None and other.max_ns is not None
        return UploadAggregate(
            self.count + other.count,
            self.sum_ns + other.sum_ns,
            min(self.min_ns, other.min_ns),
            max(self.max_ns, other.max_ns),
        )


class UploadLog:
    """Upload aggregates per UTC minute. Not thread-safe: the owning record locks it."""

    __slots__ = ("_counts", "_maxs", "_mins", "_minutes", "_sums")

    def __init__(self) -> None:
        self._minutes = array("q")
        self._counts = array("q")
        self._mins = array("q")
        self._maxs = array("q")
        self._sums: list[int] = []  # Python ints: a minute's sum may exceed int64

    def add(self, minute: int, upload_ns: int) -> None:
        """Record one upload of ``upload_ns`` sent in ``minute``."""
        minutes = self._minutes
        index = bisect_left(minutes, minute)
        if index == len(minutes) or minutes[index] != minute:
            minutes.insert(index, minute)
            self._counts.insert(index, 0)
            self._sums.insert(index, 0)
            self._mins.insert(index, upload_ns)
            self._maxs.insert(index, upload_ns)
        self._counts[index] += 1
        self._sums[index] += upload_ns
        self._mins[index] = min(self._mins[index], upload_ns)
        self._maxs[index] = max(self._maxs[index], upload_ns)

    def between(self, start: int, end: int) -> UploadAggregate:
        """The aggregate of the minutes ``m`` with ``start <= m < end``."""
        low, high = bisect_left(self._minutes, start), bisect_left(self._minutes, end)
        if low >= high:
            return UploadAggregate()
        return UploadAggregate(
            count=sum(self._counts[low:high]),
            sum_ns=sum(self._sums[low:high]),
            min_ns=min(self._mins[low:high]),
            max_ns=max(self._maxs[low:high]),
        )
