"""A memory store over a state directory, and hand-made journal segments."""

from __future__ import annotations

from pathlib import Path

from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import MAGIC, Entry, encode
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import SAMPLE_DEVICES

MINUTE_NS = 60 * 10**9
BASE = 28_534_140 * MINUTE_NS  # 2024-04-02T09:00:00Z


def open_memory(
    directory: Path, csv: tuple[str, ...] = SAMPLE_DEVICES, *, repair: bool = False
) -> MemoryStore:
    """A memory store filled from ``directory`` (fsync ``no``, no periodic snapshots)."""
    store = MemoryStore()
    DurableStore(directory, "no", 0).open(store, csv, repair=repair)
    return store


def write_segment(path: Path, entries: list[Entry]) -> list[int]:
    """Write a segment; return each record's offset."""
    offsets, data = [], bytearray(MAGIC)
    for entry in entries:
        offsets.append(len(data))
        data += encode(entry)
    path.write_bytes(bytes(data))
    return offsets
