"""The memory store's history budget: what each write costs, and that the count stays exact."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fleet_monitor.domain.bitmaps import CHUNK_MINUTES, FULL_CHUNK_COST, PARTIAL_CHUNK_COST
from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.domain.limits import UPLOAD_COST, HistoryBudget
from fleet_monitor.domain.timestamps import MINUTE_NS, parse_rfc3339
from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import JournalError
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, SAMPLE_DEVICES

BASE = parse_rfc3339("2024-04-02T00:00:00Z")


def cost(store: MemoryStore, device_id: str) -> int:
    return store.device(device_id).history.cost()


def test_a_full_chunk_costs_less_than_a_partial_one() -> None:
    store = MemoryStore(["d"])
    chunk_start = BASE - BASE % (CHUNK_MINUTES * MINUTE_NS)
    for minute in range(CHUNK_MINUTES - 1):
        store.record("d", Heartbeat(chunk_start + minute * MINUTE_NS), None)
    assert store.budget.used == cost(store, "d") == PARTIAL_CHUNK_COST
    store.record("d", Heartbeat(chunk_start + (CHUNK_MINUTES - 1) * MINUTE_NS), None)
    assert store.budget.used == cost(store, "d") == FULL_CHUNK_COST


def test_a_write_the_journal_refuses_gives_its_reservation_back() -> None:
    class Broken:
        def append(self, *args: object, **kwargs: object) -> int:
            raise JournalError("cannot write the journal: No space left on device")

        def durable(self, lsn: int) -> None:
            pass

        def flush(self) -> None:
            pass

        def problem(self) -> str | None:
            return None

    store = MemoryStore(["d"])
    store.attach_journal(Broken())
    with pytest.raises(JournalError):
        store.record("d", Heartbeat(BASE), None)
    with pytest.raises(JournalError):
        store.record("d", Upload(BASE, 5), None)
    assert store.budget.used == cost(store, "d") == 0


def test_a_write_racing_a_removal_is_refused_and_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore(SAMPLE_DEVICES)
    device = store.device(DEVICE)
    store.record(DEVICE, Heartbeat(BASE), None)
    store.remove(DEVICE)
    monkeypatch.setattr(store, "device", lambda _: device)  # looked up before the removal
    with pytest.raises(UnknownDeviceError):
        store.record(DEVICE, Heartbeat(BASE + CHUNK_MINUTES * MINUTE_NS), None)
    assert store.budget.used == 0


def test_state_loaded_at_start_is_counted_never_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    DurableStore(tmp_path, "no", 0).open(store, SAMPLE_DEVICES)
    for n in range(3):
        store.record(DEVICE, Heartbeat(BASE + n * CHUNK_MINUTES * MINUTE_NS), None)
    small = MemoryStore(budget=HistoryBudget(per_device=PARTIAL_CHUNK_COST))
    DurableStore(tmp_path, "no", 0).open(small, SAMPLE_DEVICES)  # replays past the budget
    assert small.snapshot(DEVICE).heartbeat_minutes == 3
    assert small.budget.used == 3 * PARTIAL_CHUNK_COST


def test_budget_counts_exactly_under_concurrent_writes() -> None:
    budget = HistoryBudget()
    store = MemoryStore(SAMPLE_DEVICES, budget=budget)

    def write(device: str) -> None:
        for n in range(200):
            store.record(device, Heartbeat(BASE + n * CHUNK_MINUTES * MINUTE_NS), None)
            store.record(device, Upload(BASE, n), None)

    threads = [threading.Thread(target=write, args=(device,)) for device in SAMPLE_DEVICES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.used == 5 * 200 * (PARTIAL_CHUNK_COST + UPLOAD_COST)
    assert budget.used == sum(cost(store, device) for device in SAMPLE_DEVICES)
