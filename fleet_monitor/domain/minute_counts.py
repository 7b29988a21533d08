"""How many devices had a heartbeat in each minute of a span, bit-sliced.

A count per minute kept as ``planes``: bit ``i`` of plane ``k`` is bit ``k`` of the count of
minute ``base + i``. Adding a device's bitmap of the span is a binary addition of every
minute at once (a few big-integer operations: the carries stop early); adding one minute
flips a few bits in place (planes are bytearrays, so a heartbeat copies nothing); the sum of
the counts of a range of minutes is one masked popcount per plane, whatever the number of
devices. While many bitmaps are added at once (``bulk``), planes are kept as integers, so
each addition converts nothing; :meth:`finish_bulk` turns them into bytearrays.
"""

from __future__ import annotations

from collections.abc import Sequence


class MinuteCounts:
    """Per-minute counts over ``[base, base + span)``; every count starts at 0."""

    __slots__ = ("_bulk", "_size", "base", "planes", "span")

    def __init__(self, base: int, span: int, *, bulk: bool = False) -> None:
        self.base = base
        self.span = span
        self._size = (span + 7) // 8
        self.planes: list[bytearray] = []  # little-endian: bit i of byte j is minute 8j + i
        self._bulk: list[int] | None = [] if bulk else None  # the planes, while in bulk

    def finish_bulk(self) -> None:
        """Leave bulk mode: from now on a minute is added in place."""
        if self._bulk is not None:
            self.planes, self._bulk = [self._plane(value) for value in self._bulk], None

    def _values(self) -> list[int]:
        if self._bulk is not None:
            return self._bulk
        return [int.from_bytes(plane, "little") for plane in self.planes]

    @property
    def end(self) -> int:
        """The first minute after the span."""
        return self.base + self.span

    def _plane(self, bits: int) -> bytearray:
        return bytearray(bits.to_bytes(self._size, "little"))

    def add(self, bits: int) -> None:
        """Add 1 to the count of each minute ``base + i`` whose bit ``i`` is set in ``bits``
        (bits beyond the span must be clear)."""
        if self._bulk is not None:
            self._add_values(self._bulk, bits)
            return
        carry, planes = bits, self.planes
        for k, plane in enumerate(planes):
            if not carry:
                return
            value = int.from_bytes(plane, "little")
            planes[k] = self._plane(value ^ carry)
            carry &= value
        if carry:
            planes.append(self._plane(carry))

    @staticmethod
    def _add_values(planes: list[int], carry: int) -> None:
        for k, value in enumerate(planes):
            if not carry:
                return
            planes[k] = value ^ carry
            carry &= value
        if carry:
            planes.append(carry)

    def subtract(self, bits: int) -> None:
        """Take 1 from the count of each minute set in ``bits``, every one of which must be
        at least 1 (bits a previous :meth:`add` gave)."""
        values = list(self._values())  # a copy: nothing changes if it raises
        borrow = bits
        for k, value in enumerate(values):
            if not borrow:
                break
            values[k] = value ^ borrow
            borrow &= ~value
        if borrow:
            raise ValueError("a count would fall below 0")
        while values and not values[-1]:
            values.pop()
        if self._bulk is None:
            self.planes = [self._plane(value) for value in values]
        else:
            self._bulk = values

    def add_minute(self, minute: int) -> None:
        """Add 1 to the count of ``minute`` (ignored outside the span), in place."""
        offset = minute - self.base
        if not 0 <= offset < self.span:
            return
        if self._bulk is not None:
            self._add_values(self._bulk, 1 << offset)
            return
        byte, mask = offset >> 3, 1 << (offset & 7)
        for plane in self.planes:
            value = plane[byte]
            if not value & mask:
                plane[byte] = value | mask
                return
            plane[byte] = value ^ mask  # carry on
        plane = bytearray(self._size)
        plane[byte] = mask
        self.planes.append(plane)

    def totals(self, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """For each ``(start, end)``, the sum of the counts of minutes ``start <= m < end``
        (those of the span); each plane is read once."""
        masks = []
        for start, end in ranges:
            low, high = max(start, self.base) - self.base, min(end, self.end) - self.base
            masks.append(((1 << (high - low)) - 1) << low if high > low else 0)
        sums = [0] * len(masks)
        for k, value in enumerate(self._values()):
            for n, mask in enumerate(masks):
                sums[n] += (value & mask).bit_count() << k
        return sums

    def count(self, minute: int) -> int:
        """The count of one minute (0 outside the span)."""
        return self.totals([(minute, minute + 1)])[0]
