"""A compact set of minute numbers: a bitmap, one bit a minute, in fixed-size chunks.

Minutes are grouped into chunks of :data:`CHUNK_MINUTES` consecutive minutes; a chunk is a
``bytearray`` of one bit per minute, created the first time one of its minutes is added, and
swapped for the shared :data:`FULL_CHUNK` once every minute of it is in the set.
The set therefore grows in either direction (out-of-order heartbeats), costs about
``CHUNK_MINUTES / 8`` bytes per chunk touched (a device-year of per-minute heartbeats is
~66 KB), and a stray timestamp years away costs one chunk rather than a bitmap spanning
the gap.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

CHUNK_MINUTES = 4096
_CHUNK_BYTES = CHUNK_MINUTES // 8
# One immutable all-ones chunk shared by every set: a device that sent a heartbeat every minute
# of a chunk keeps no bitmap for it (a 30-day device: 7,940 -> 1,800 bytes). Nothing is ever
# written to it: add() returns before writing when the bit is already set.
FULL_CHUNK = b"\xff" * _CHUNK_BYTES
# Estimated bytes of memory a chunk holds (with its dict slot and key), for history budgets:
# a partial one its own bytearray, a full one only its slot.
PARTIAL_CHUNK_COST = 640
FULL_CHUNK_COST = 80


class MinuteSet:
    """A set of integer minutes with O(1) add, size, first and last."""

    __slots__ = ("_chunks", "_count", "_first", "_full", "_last")

    def __init__(self) -> None:
        self._chunks: dict[int, bytearray | bytes] = {}
        self._full = 0  # chunks swapped for FULL_CHUNK
        self._count = 0
        self._first: int | None = None
        self._last: int | None = None

    def add(self, minute: int) -> bool:
        """Add ``minute``; return True if it was not in the set yet."""
        index, bit = divmod(minute, CHUNK_MINUTES)
        chunk = self._chunks.get(index)
        if chunk is None:
            chunk = self._chunks[index] = bytearray(_CHUNK_BYTES)
        byte, mask = bit >> 3, 1 << (bit & 7)
        if chunk[byte] & mask:
            return False
        assert isinstance(chunk, bytearray)  # a full chunk has every bit set
        chunk[byte] |= mask
        if chunk[byte] == 0xFF and chunk == FULL_CHUNK:
            self._chunks[index] = FULL_CHUNK
            self._full += 1
        self._count += 1
        if self._first is None or minute < self._first:
            self._first = minute
        if self._last is None or minute > self._last:
            self._last = minute
        return True

    def cost(self) -> int:
        """Estimated bytes of memory the set's chunks hold (see :data:`PARTIAL_CHUNK_COST`)."""
        partial = len(self._chunks) - self._full
        return partial * PARTIAL_CHUNK_COST + self._full * FULL_CHUNK_COST

    def cost_of_adding(self, minute: int) -> int:
        """How much :meth:`cost` grows at most if ``minute`` is added: a new chunk, or 0."""
        return 0 if minute // CHUNK_MINUTES in self._chunks else PARTIAL_CHUNK_COST

    def __contains__(self, minute: object) -> bool:
        if not isinstance(minute, int):
            return False
        index, bit = divmod(minute, CHUNK_MINUTES)
        chunk = self._chunks.get(index)
        return chunk is not None and bool(chunk[bit >> 3] & (1 << (bit & 7)))

    def __len__(self) -> int:
        return self._count

    @property
    def first(self) -> int | None:
        """The smallest minute in the set, or None when it is empty."""
        return self._first

    @property
    def last(self) -> int | None:
        """The largest minute in the set, or None when it is empty."""
        return self._last

    def count_between(self, start: int, end: int) -> int:
        """How many minutes ``m`` with ``start <= m < end`` are in the set.

        Counts a whole chunk at a time (``int.bit_count`` over its bytes), never minute by
        minute, and skips chunks that were never touched.
        """
        if end <= start or not self._count:
            return 0
        total = 0
        first_index, last_index = start // CHUNK_MINUTES, (end - 1) // CHUNK_MINUTES
        if last_index - first_index + 1 > len(self._chunks):
            indices = sorted(i for i in self._chunks if first_index <= i <= last_index)
        else:
            indices = [i for i in range(first_index, last_index + 1) if i in self._chunks]
        for index in indices:
            chunk = self._chunks[index]
            base = index * CHUNK_MINUTES
            low, high = max(start - base, 0), min(end - base, CHUNK_MINUTES)
            if chunk is FULL_CHUNK:  # every minute is in: nothing to count
                total += high - low
                continue
            bits = int.from_bytes(chunk, "little")
            if high - low < CHUNK_MINUTES:
                bits = (bits >> low) & ((1 << (high - low)) - 1)
            total += bits.bit_count()
        return total

    def chunk_bits(self, start: int, end: int) -> list[tuple[int, int]]:
        """Each chunk holding a minute ``start <= m < end``, in order, as ``(index, bits)``
        with bit ``i`` the chunk's ``i``-th minute."""
        if end <= start:
            return []
        first_index, last_index = start // CHUNK_MINUTES, (end - 1) // CHUNK_MINUTES
        indices = sorted(i for i in self._chunks if first_index <= i <= last_index)
        return [(i, int.from_bytes(self._chunks[i], "little")) for i in indices]

    def bits_between(self, start: int, end: int) -> int:
        """The minutes ``start <= m < end`` as one integer: bit ``i`` is minute
        ``start + i``."""
        bits = 0
        for index, chunk in self.chunk_bits(start, end):
            offset = index * CHUNK_MINUTES - start
            bits |= chunk << offset if offset >= 0 else chunk >> -offset
        return bits & ((1 << (end - start)) - 1) if end > start else 0

    def chunks(self) -> Iterator[tuple[int, bytes | bytearray]]:
        """Each chunk as ``(index, bits)``, least significant bit first; a full chunk is
        :data:`FULL_CHUNK` itself (for storage formats to write it compactly)."""
        return iter(self._chunks.items())

    @classmethod
    def from_parts(
        cls, count: int, first: int | None, last: int | None, chunks: Iterable[tuple[int, bytes]]
    ) -> MinuteSet:
        """The set whose :meth:`chunks`, size, first and last minute these are (a chunk equal
        to :data:`FULL_CHUNK` is shared, as :meth:`add` does)."""
        minutes = cls()
        minutes._count, minutes._first, minutes._last = count, first, last
        for index, bits in chunks:
            full = bits == FULL_CHUNK
            minutes._chunks[index] = FULL_CHUNK if full else bytearray(bits)
            minutes._full += full
        return minutes

    def nbytes(self) -> int:
        """Approximate bytes of memory held by this set (chunks, their dict and itself)."""
        chunks = sum(
            sys.getsizeof(chunk) for chunk in self._chunks.values() if chunk is not FULL_CHUNK
        )
        return sys.getsizeof(self) + sys.getsizeof(self._chunks) + chunks
