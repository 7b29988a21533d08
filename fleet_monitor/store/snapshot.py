"""Snapshots: the whole fleet in one file, written atomically, so the journal can be cut.

``snapshot.jsonl`` holds JSON lines: a header ``{"format": "fleet-monitor-snapshot",
"version": 1, "next_lsn", "registry_lsn", "removed": [ids]}``, one line per device (its
state, see :func:`fleet_monitor.store.codec.encode_device`), and a trailer ``{"end": true,
"devices": n, "sha256": hex}`` (the digest of every line before it; snapshots written before
it existed have none and are read unchecked). It is written to a temporary file, fsynced and
renamed over the old one, which is kept as ``snapshot.prev.jsonl``: a start with ``--repair``
falls back to it (and the journal after it) when the newest one is damaged.
"""

from __future__ import annotations

import hashlib
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
PREVIOUS_FILE = "snapshot.prev.jsonl"


class SnapshotError(Exception):
    """The snapshot cannot be read; str() names the file and line."""


@dataclass(frozen=True)
class Snapshot:
    """A read snapshot: the lsn counters, removed ids, and each device's exported state."""

    next_lsn: int
    registry_lsn: int
    removed: list[str]
    devices: list[dict[str, Any]]
    maintenance: list[str]  # each window's JSON


def write_snapshot(
    directory: Path,
    next_lsn: int,
    registry_lsn: int,
    removed: list[str],
    devices: Iterator[dict[str, Any]],
    *,
    maintenance: list[str] | None = None,
) -> int:
    """Write a snapshot atomically; return how many devices it holds. The one it replaces
    becomes the previous snapshot. On failure the old snapshot stays and the partial new one
    is deleted (on a full disk, it is what fills it)."""
    final = directory / SNAPSHOT_FILE
    temporary = directory / (SNAPSHOT_FILE + ".tmp")
    try:
        count = _write(
            temporary, next_lsn, registry_lsn, removed, devices, maintenance=maintenance or []
        )
        if final.exists():
            _keep_as_previous(directory, final)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
    return count


def _keep_as_previous(directory: Path, final: Path) -> None:
    """Hard-link the current snapshot as the previous one (a snapshot is always in place)."""
    _link(final, directory / PREVIOUS_FILE)


def _link(source: Path, target: Path) -> None:
    linked = target.with_name(target.name + ".tmp")
    linked.unlink(missing_ok=True)
    os.link(source, linked)
    os.replace(linked, target)


def set_aside_damaged(directory: Path) -> Path:
    """Rename a damaged snapshot out of the way (kept for inspection) and put the previous
    one, if any, in its place; return the damaged one's new path."""
    damaged = directory / (SNAPSHOT_FILE + ".damaged")
    os.replace(directory / SNAPSHOT_FILE, damaged)
    if (directory / PREVIOUS_FILE).exists():
        _link(directory / PREVIOUS_FILE, directory / SNAPSHOT_FILE)
    fsync_directory(directory)
    return damaged


def _write(
    temporary: Path,
    next_lsn: int,
    registry_lsn: int,
    removed: list[str],
    devices: Iterator[dict[str, Any]],
    *,
    maintenance: list[str],
) -> int:
    count = 0
    digest = hashlib.sha256()

    def line(record: dict[str, Any]) -> None:
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        digest.update(data)
        out.write(data)

    with temporary.open("wb") as out:
        header = {
            "format": FORMAT,
            "version": VERSION,
            "next_lsn": next_lsn,
            "registry_lsn": registry_lsn,
            "removed": removed,
            "maintenance": maintenance,
        }
        line(header)
        for state in devices:
            line(state)
            count += 1
        trailer = {"end": True, "devices": count, "sha256": digest.hexdigest()}
        out.write((json.dumps(trailer) + "\n").encode())
        out.flush()
        os.fsync(out.fileno())
    return count


def read_snapshot(directory: Path, name: str = SNAPSHOT_FILE) -> Snapshot | None:
    """The directory's snapshot (or its previous one), or None when it has none; raises
    :class:`SnapshotError` with one line naming what is wrong."""
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SnapshotError(f"{path}: cannot read the snapshot: {error.strerror}") from None
    try:
        return _parse(path, data)
    except SnapshotError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise SnapshotError(f"{path}: not a fleet-monitor snapshot ({error!r})") from None


def _parse(path: Path, data: bytes) -> Snapshot:
    lines = data.splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    if not records or records[0].get("format") != FORMAT:
        raise SnapshotError(f"{path}:1: not a fleet-monitor snapshot")
    header = records[0]
    if header.get("version") != VERSION:
        raise SnapshotError(f"{path}:1: snapshot version {header.get('version')} is not {VERSION}")
    trailer = records[-1]
    devices = records[1:-1]
    if trailer.get("end") is not True or trailer.get("devices") != len(devices):
        raise SnapshotError(f"{path}: the snapshot is incomplete (no matching end line)")
    expected = trailer.get("sha256")
    if expected is not None and hashlib.sha256(b"".join(lines[:-1])).hexdigest() != expected:
        raise SnapshotError(f"{path}: the snapshot is damaged (its checksum does not match)")
    return Snapshot(
        int(header["next_lsn"]),
        int(header["registry_lsn"]),
        list(header["removed"]),
        devices,
        list(header.get("maintenance", [])),
    )
