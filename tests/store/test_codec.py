"""The snapshot's JSON values of a device, both ways, and keys of older snapshots."""

from __future__ import annotations

from fleet_monitor.domain.events import Heartbeat, Upload
from fleet_monitor.store.codec import decode_device, encode_device
from fleet_monitor.store.memory import MemoryStore
from tests.conftest import DEVICE, exported

MINUTE_NS = 60 * 10**9


def test_a_device_round_trips_exactly() -> None:
    store = MemoryStore([DEVICE])
    for minute in range(5000):  # one full chunk, one partial
        store.record(DEVICE, Heartbeat(28_000_000 * MINUTE_NS + minute * MINUTE_NS), None)
    store.record(DEVICE, Upload(MINUTE_NS, 7), "u1")
    store.record(DEVICE, Heartbeat(0), "h1")
    state = exported(store, DEVICE)
    device_id, lsn, history = decode_device(state)
    assert encode_device(device_id, lsn, history) == state
    assert state["keys"] == [["upload", "u1", MINUTE_NS, 7], ["heartbeat", "h1", 0, None]]
    assert history.snapshot(DEVICE) == store.snapshot(DEVICE)


def test_keys_of_an_older_snapshot_match_any_event_of_either_kind() -> None:
    state = exported(MemoryStore([DEVICE]), DEVICE)
    state["keys"] = ["old"]
    _, _, history = decode_device(state)
    assert history.is_repeat(Heartbeat(1), "old")
    assert history.is_repeat(Upload(9, 9), "old")
    assert encode_device(DEVICE, 0, history)["keys"] == [
        ["heartbeat", "old", None, None],
        ["upload", "old", None, None],
    ]
