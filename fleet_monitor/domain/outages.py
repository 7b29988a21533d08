"""Outages: the runs of minutes without a heartbeat, read from the minute bitmap.

An outage is a maximal run of whole minutes with no heartbeat between the device's first
heartbeat minute and the current minute (which is not over, so never counted). A run that
reaches the current minute is ``open``: the device has not come back yet. Heartbeats that arrive
late or out of order fill their minute, so the outages are always those of the bitmap as it is
now. Runs are cut at the edges of the window asked for.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fleet_monitor.domain.bitmaps import CHUNK_MINUTES
from fleet_monitor.domain.readmodels import FleetReads


@dataclass(frozen=True)
class Outage:
    """Minutes ``start`` to ``end - 1`` had no heartbeat; ``open`` if it lasts until now."""

    start: int
    end: int
    open: bool
    maintenance_minutes: int = 0  # of its minutes inside a maintenance window

    @property
    def minutes(self) -> int:
        """How long it lasted (so far, when open)."""
        return self.end - self.start


@dataclass(frozen=True)
class OutageTotals:
    """Outages of at least the minimum length in a window: how many, their minutes, the
    longest, and the minutes between them (up) and to recover (down), on average."""

    count: int
    minutes: int
    longest: int
    watched: int  # minutes of the window between the first heartbeat and now
    maintenance_minutes: int = 0  # of the outages' minutes inside maintenance windows

    @property
    def mtbf_minutes(self) -> float | None:
        """Mean minutes up between outages (None without an outage)."""
        return (self.watched - self.minutes) / self.count if self.count else None

    @property
    def mttr_minutes(self) -> float | None:
        """Mean minutes an outage lasted (None without an outage)."""
        return self.minutes / self.count if self.count else None


def gaps(chunks: Iterable[tuple[int, int]], start: int, end: int) -> Iterator[tuple[int, int]]:
    """Each maximal run ``(first, end)`` of minutes ``start <= m < end`` that are not set in
    ``chunks`` (see :meth:`FleetReads.heartbeat_chunks`), in order; chunks that are missing
    have no minute set. Work grows with the chunks and the runs, never with the minutes."""
    pending: int | None = None  # where the run still open at the last chunk's end began
    cursor = start
    for index, bits in chunks:
        base = index * CHUNK_MINUTES
        low, high = max(start, base), min(end, base + CHUNK_MINUTES)
        if high <= low:
            continue
        if cursor < low and pending is None:  # chunks never written: one run
            pending = cursor
        width = high - low
        zeros = ~(bits >> (low - base)) & ((1 << width) - 1)
        offset = 0
        while zeros:
            skip = (zeros & -zeros).bit_length() - 1  # set minutes before the next run
            if skip:
                if pending is not None:
                    yield pending, low + offset
                    pending = None
                zeros >>= skip
                offset += skip
            run = (~zeros & (zeros + 1)).bit_length() - 1  # its length within this chunk
            if pending is None:
                pending = low + offset
            zeros >>= run
            offset += run
        if offset < width and pending is not None:  # set minutes to the chunk's end
            yield pending, low + offset
            pending = None
        cursor = high
    if cursor < end and pending is None:
        pending = cursor
    if pending is not None:
        yield pending, end


@dataclass(frozen=True)
class OutagePage:
    """A page of outages in a window (``start``/``end`` in minutes), what follows it, and the
    window's totals."""

    start: int
    end: int
    outages: list[Outage]
    next_minute: int | None
    totals: OutageTotals


def outage_page(
    store: FleetReads,
    device_id: str,
    span: tuple[int | None, int | None],
    now_minute: int,
    window: tuple[int, int],
    *,
    at_least: int,
    after: int | None,
    limit: int,
    maintained: Sequence[tuple[int, int]] = (),
) -> OutagePage:
    """Outages of ``device_id`` in ``window`` (minutes ``start <= m < end``) of ``at_least``
    minutes, starting at ``after`` (a page's ``next_minute``) or the window's start, at most
    ``limit``; with the totals of the whole window. ``span`` is the device's first and last
    heartbeat minute, ``now_minute`` the current one; ``maintained`` the device's maintenance
    minutes as sorted, merged runs (each outage says how many of its minutes they hold)."""
    first, last = span
    start, end = window
    if first is None or last is None:
        return OutagePage(start, end, [], None, OutageTotals(0, 0, 0, 0))
    low, high = max(start, first), min(end, now_minute)
    found: list[Outage] = []
    count = minutes = longest = in_maintenance = 0
    next_minute = None
    starts = [start for start, _ in maintained]
    if high > low:
        for run_start, run_end in gaps(store.heartbeat_chunks(device_id, low, high), low, high):
            if run_end - run_start < at_least:
                continue
            count, minutes = count + 1, minutes + run_end - run_start
            longest = max(longest, run_end - run_start)
            overlap = _overlap(maintained, starts, run_start, run_end)
            in_maintenance += overlap
            if after is not None and run_start < after:
                continue
            if len(found) < limit:
                still = run_end == now_minute and run_start > last
                found.append(Outage(run_start, run_end, still, overlap))
            elif next_minute is None:
                next_minute = run_start
    totals = OutageTotals(count, minutes, longest, max(high - low, 0), in_maintenance)
    return OutagePage(start, end, found, next_minute, totals)


def _overlap(runs: Sequence[tuple[int, int]], starts: list[int], low: int, high: int) -> int:
    """Minutes of ``[low, high)`` inside ``runs`` (sorted, merged; ``starts`` their starts)."""
    total = 0
    for start, end in runs[max(0, bisect_right(starts, low) - 1) :]:
        if start >= high:
            break
        total += max(0, min(end, high) - max(start, low))
    return total
