"""Idempotency keys: scoped per kind, kept with what they recorded, exported and restored."""

from __future__ import annotations

import pytest

from fleet_monitor.domain.errors import IdempotencyConflictError
from fleet_monitor.domain.events import HEARTBEAT, UPLOAD
from fleet_monitor.domain.idempotency import KEYS_PER_DEVICE, KeyMemory


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


def test_items_and_from_items_round_trip() -> None:
    memory = KeyMemory()
    memory.remember(HEARTBEAT, "a", (1, None))
    memory.remember(UPLOAD, "a", (1, 2))
    items = list(memory.items())
    assert items == [("heartbeat", "a", (1, None)), ("upload", "a", (1, 2))]
    restored = KeyMemory.from_items(items)
    assert list(restored.items()) == items
    with pytest.raises(IdempotencyConflictError):
        restored.is_repeat(UPLOAD, "a", (1, 3))


def test_a_key_whose_event_is_unknown_matches_any_event() -> None:
    memory = KeyMemory.from_items([(HEARTBEAT, "old", None)])
    assert memory.is_repeat(HEARTBEAT, "old", (1, None))
    assert memory.is_repeat(HEARTBEAT, "old", (2, None))
