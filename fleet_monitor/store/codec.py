"""A device's history as the snapshot's JSON values, and back (snapshot format version 1).

``{"id", "lsn", "first", "last", "minutes": {"count", "first", "last", "chunks": {index:
base64 bits, or "full"}}, "uploads": {"minutes", "times"}: little-endian int64 arrays in
base64, "count", "sum", "min", "max", "keys": [[kind, key, sent_at_ns, upload_ns], ...]}``.
Keys written by older versions as bare strings are read as keys of both kinds that match any
event (their fingerprints were not kept).
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

from fleet_monitor.domain.bitmaps import FULL_CHUNK, MinuteSet
from fleet_monitor.domain.history import DeviceHistory
from fleet_monitor.domain.idempotency import KINDS, Fingerprint, KeyMemory
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.uploads import UploadLog


def encode_device(device_id: str, lsn: int, history: DeviceHistory) -> dict[str, Any]:
    """The JSON-ready state of one device (call under its lock)."""
    minutes = history.minutes
    upload_minutes, upload_times = history.uploads.arrays()
    return {
        "id": device_id,
        "lsn": lsn,
        "first": history.first_heartbeat_ns,
        "last": history.last_heartbeat_ns,
        "minutes": {
            "count": len(minutes),
            "first": minutes.first,
            "last": minutes.last,
            "chunks": {
                str(index): "full" if bits is FULL_CHUNK else base64.b64encode(bits).decode()
                for index, bits in minutes.chunks()
            },
        },
        "uploads": {"minutes": _to_base64(upload_minutes), "times": _to_base64(upload_times)},
        "count": history.upload_count,
        "sum": history.upload_sum_ns,
        "min": history.upload_min_ns,
        "max": history.upload_max_ns,
        "received": [history.last_received_ns, history.last_received_sent_ns],
        "profile": history.profile.to_json(),
        "keys": [
            [kind, key, *(fingerprint or (None, None))]
            for kind, key, fingerprint in (history.keys.items() if history.keys else ())
        ],
    }


def decode_device(state: dict[str, Any]) -> tuple[str, int, DeviceHistory]:
    """``(device id, lsn, history)`` from :func:`encode_device`'s values."""
    history = DeviceHistory()
    history.first_heartbeat_ns, history.last_heartbeat_ns = state["first"], state["last"]
    minutes = state["minutes"]
    if minutes["count"]:
        history.minutes = MinuteSet.from_parts(
            minutes["count"],
            minutes["first"],
            minutes["last"],
            (
                (int(index), FULL_CHUNK if text == "full" else base64.b64decode(text))
                for index, text in minutes["chunks"].items()
            ),
        )
    if state["count"]:
        uploads = state["uploads"]
        history.uploads = UploadLog.from_arrays(
            _from_base64(uploads["minutes"]), _from_base64(uploads["times"])
        )
    history.upload_count, history.upload_sum_ns = state["count"], state["sum"]
    history.upload_min_ns, history.upload_max_ns = state["min"], state["max"]
    history.last_received_ns, history.last_received_sent_ns = state.get("received", [None, None])
    history.profile = Profile.from_json(state.get("profile"))
    if state["keys"]:
        history.keys = KeyMemory.from_items(_key_items(state["keys"]))
    return state["id"], state["lsn"], history


def _key_items(rows: list[Any]) -> list[tuple[str, str, Fingerprint | None]]:
    items: list[tuple[str, str, Fingerprint | None]] = []
    for row in rows:
        if isinstance(row, str):  # an older snapshot: the kind and the event are unknown
            items += [(kind, row, None) for kind in KINDS]
            continue
        kind, key, sent_at_ns, upload_ns = row
        items.append((kind, key, None if sent_at_ns is None else (sent_at_ns, upload_ns)))
    return items


def _to_base64(values: array[int]) -> str:
    if sys.byteorder == "big":
        values = array("q", values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()


def _from_base64(text: str) -> array[int]:
    values = array("q")
    values.frombytes(base64.b64decode(text))
    if sys.byteorder == "big":
        values.byteswap()
    return values
