"""Uploads by minute, compact and ordered: any window's count, sum, min and max.

Each upload is kept as two machine integers in parallel ``array``s sorted by minute (16 bytes
an upload, against about 40 for a per-minute aggregate of four values, since a device uploads
at most about once a minute). A window is found by bisection and aggregated in C (``sum``,
``min``, ``max`` over an array slice; the sum is a Python int, so exact beyond int64). Uploads
arriving in time order append at the end.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
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
    """Upload times by UTC minute. Not thread-safe: the owning record locks it."""

    __slots__ = ("_minutes", "_times")

    def __init__(self) -> None:
        self._minutes = array("q")
        self._times = array("q")

    def add(self, minute: int, upload_ns: int) -> None:
        """Record one upload of ``upload_ns`` sent in ``minute``."""
        index = bisect_right(self._minutes, minute)
        self._minutes.insert(index, minute)
        self._times.insert(index, upload_ns)

    def between(self, start: int, end: int) -> UploadAggregate:
        """The aggregate of the uploads in minutes ``m`` with ``start <= m < end``."""
        low, high = bisect_left(self._minutes, start), bisect_left(self._minutes, end)
        if low >= high:
            return UploadAggregate()
        times = self._times[low:high]
        return UploadAggregate(
            count=high - low, sum_ns=sum(times), min_ns=min(times), max_ns=max(times)
        )

    def arrays(self) -> tuple[array[int], array[int]]:
        """The minutes and the upload times, in parallel, sorted by minute (the log's own
        arrays: read them, never change them)."""
        return self._minutes, self._times

    @classmethod
    def from_arrays(cls, minutes: array[int], times: array[int]) -> UploadLog:
        """The log whose :meth:`arrays` these are."""
        log = cls()
        log._minutes, log._times = minutes, times
        return log
