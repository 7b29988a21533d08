"""Idempotency keys: scoped per kind, kept with what they recorded, exported and restored."""

from __future__ import annotations

import pytest

from fleet_monitor.errors import IdempotencyConflictError
from fleet_monitor.idempotency import HEARTBEAT, KEYS_PER_DEVICE, UPLOAD, KeyMemory


def test_a_repeat_a_conflict_and_another_kind() -> None:
    memory = KeyMemory()
    memory.remember(UPLOAD, "k", (5, 7))
    assert memory.is_repeat(UPLOAD, "k", (5, 7)) is True
    assert memory.is_repeat(HEARTBEAT, "k", (5, None)) is False
    with pytest.raises(IdempotencyConflictError) as raised:
        memory.is_repeat(UPLOAD, "k", (5, 8))
    assert raised.value.status == 409
    assert raised.value.reason == "idempotency_conflict"


def test_only_the_latest_keys_are_kept() -> None:
    memory = KeyMemory()
    for n in range(KEYS_PER_DEVICE + 1):
        memory.remember(HEARTBEAT, f"k{n}", (n, None))
    assert memory.is_repeat(HEARTBEAT, "k0", (1, None)) is False  # forgotten: no conflict
    assert memory.is_repeat(HEARTBEAT, f"k{KEYS_PER_DEVICE}", (KEYS_PER_DEVICE, None))


def test_export_and_restore_round_trip() -> None:
    memory = KeyMemory()
    memory.remember(HEARTBEAT, "a", (1, None))
    memory.remember(UPLOAD, "a", (1, 2))
    rows = memory.export()
    assert rows == [["heartbeat", "a", 1, None], ["upload", "a", 1, 2]]
    restored = KeyMemory.restore(rows)
    assert restored.export() == rows
    with pytest.raises(IdempotencyConflictError):
        restored.is_repeat(UPLOAD, "a", (1, 3))


def test_keys_of_an_older_snapshot_match_any_event_of_either_kind() -> None:
    restored = KeyMemory.restore(["old"])
    assert restored.is_repeat(HEARTBEAT, "old", (1, None))
    assert restored.is_repeat(UPLOAD, "old", (9, 9))
    assert restored.export() == [["heartbeat", "old", None, None], ["upload", "old", None, None]]
