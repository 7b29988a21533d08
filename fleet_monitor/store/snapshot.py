"""Snapshots: the whole fleet in one file, written atomically, so the journal can be cut.

``snapshot.jsonl`` holds JSON lines: a header ``{"format": "fleet-monitor-snapshot",
"version": 1, "next_lsn", "registry_lsn", "removed": [ids]}``, one line per device (its
state, see :func:`fleet_monitor.store.codec.encode_device`), and a trailer ``{"end": true,
"devices": n}``. It is written to a temporary file, fsynced and renamed over the old one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_monitor.store.journal_format import fsync_directory

FORMAT = "fleet-monitor-snapshot"
VERSION = 1
SNAPSHOT_FILE = "snapshot.jsonl"


class SnapshotError(Exception):
    """The snapshot cannot be read; str() names the file and line."""


@dataclass(frozen=True)
class Snapshot:
    """A read snapshot: the lsn counters, removed ids, and each device's exported state."""

    next_lsn: int
    registry_lsn: int
    removed: list[str]
    devices: list[dict[str, Any]]


def write_snapshot(
    directory: Path,
    next_lsn: int,
    registry_lsn: int,
    removed: list[str],
    devices: Iterator[dict[str, Any]],
) -> int:
    """Write a snapshot atomically; return how many devices it holds. On failure the old
    snapshot stays and the partial new one is deleted (on a full disk, it is what fills it)."""
    final = directory / SNAPSHOT_FILE
    temporary = directory / (SNAPSHOT_FILE + ".tmp")
    try:
        count = _write(temporary, next_lsn, registry_lsn, removed, devices)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return count


def _write(
    temporary: Path,
    next_lsn: int,
    registry_lsn: int,
    removed: list[str],
    devices: Iterator[dict[str, Any]],
) -> int:
    count = 0
    with temporary.open("w", encoding="utf-8") as out:
        header = {
            "format": FORMAT,
            "version": VERSION,
            "next_lsn": next_lsn,
            "registry_lsn": registry_lsn,
            "removed": removed,
        }
        out.write(json.dumps(header) + "\n")
        for state in devices:
            out.write(json.dumps(state, separators=(",", ":")) + "\n")
            count += 1
        out.write(json.dumps({"end": True, "devices": count}) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return count


def read_snapshot(directory: Path) -> Snapshot | None:
    """The directory's snapshot, or None when it has none."""
    path = directory / SNAPSHOT_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotError(f"{path}: cannot read the snapshot: {error}") from None
    try:
        records = [json.loads(line) for line in lines]
    except ValueError as error:
        raise SnapshotError(f"{path}: not a snapshot: {error}") from None
    if not records or records[0].get("format") != FORMAT:
        raise SnapshotError(f"{path}:1: not a fleet-monitor snapshot")
    header = records[0]
    if header.get("version") != VERSION:
        raise SnapshotError(f"{path}:1: snapshot version {header.get('version')} is not {VERSION}")
    trailer = records[-1]
    devices = records[1:-1]
    if trailer.get("end") is not True or trailer.get("devices") != len(devices):
        raise SnapshotError(f"{path}: the snapshot is incomplete (no matching end line)")
    return Snapshot(header["next_lsn"], header["registry_lsn"], header["removed"], devices)
