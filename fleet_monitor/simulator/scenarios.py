"""Simulator scenarios: the events a fleet sends, and the results a correct server reports.

A scenario is a list of :class:`Event` s, generated from a seed or read from JSON Lines.
Expected results come from replaying it into the package's own memory store,
so the simulator never keeps a second copy of the uptime or average formulas.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_monitor.domain.durations import MINUTE, SECOND, format_duration
from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.events import HEARTBEAT, UPLOAD, Heartbeat, Upload, parse_timestamp
from fleet_monitor.domain.timestamps import format_rfc3339, parse_rfc3339
from fleet_monitor.store.memory import MemoryStore

ZERO_TIME = "0001-01-01T00:00:00Z"
DEFAULT_START = "2024-04-02T09:00:00Z"
KINDS = (HEARTBEAT, UPLOAD)

# The closed simulator's fleet: heartbeat minutes over a 480-minute span, and the truncated
# average (ns) of its 100 uploads, as the SPEC's table gives them.
ASSIGNMENT_FLEET = {
    "60-6b-44-84-dc-64": (479, 187_893_379_134),
    "b4-45-52-a2-f1-3c": (480, 199_085_533_836),
    "26-9a-66-01-33-83": (446, 201_858_747_766),
    "18-b8-87-e7-1f-06": (474, 197_331_667_813),
    "38-4e-73-e0-33-59": (479, 209_226_522_788),
}
ASSIGNMENT_SPAN_MINUTES = 480
ASSIGNMENT_UPLOADS = 100


class ScenarioError(Exception):
    """A scenario file or option that cannot be used; str() says where and why."""


@dataclass(frozen=True)
class Event:
    """One request a device makes: a heartbeat, or an upload record with its duration."""

    device_id: str
    kind: str
    sent_at: str
    upload_time: int | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body of the request."""
        if self.kind == "heartbeat":
            return {"sent_at": self.sent_at}
        return {"sent_at": self.sent_at, "upload_time": self.upload_time}

    def path(self) -> str:
        """The API path the event is POSTed to."""
        suffix = "heartbeat" if self.kind == "heartbeat" else "stats"
        return f"/api/v1/devices/{self.device_id}/{suffix}"


@dataclass(frozen=True)
class Expected:
    """What a correct server reports for a device."""

    uptime: float
    avg_upload_time: str


@dataclass(frozen=True)
class GeneratorOptions:
    """How to generate a scenario."""

    minutes: int = 480
    uploads: int = 100
    missing_rate: float = 0.02
    duplicate_rate: float = 0.02
    out_of_order: float = 0.05
    seed: int = 1
    start: str = DEFAULT_START


def _at(start_ns: int, minute: int, offset_ns: int = 0) -> str:
    return format_rfc3339(start_ns + minute * MINUTE + offset_ns)


def generate(devices: Sequence[str], options: GeneratorOptions) -> list[Event]:
    """A deterministic scenario for ``devices``: same options and seed, same events.

    Each device gets a heartbeat in every minute of ``minutes`` unless dropped with
    ``missing_rate`` (the first and last minute are always sent), at a random second and
    sub-second inside its minute; a share ``duplicate_rate`` is sent twice (a retrying device)
    and a share ``out_of_order`` is swapped with a later event. Upload records are spread over
    the span, with upload times from 10 s to 10 min.
    """
    rng = random.Random(options.seed)
    start_ns = parse_rfc3339(options.start)
    events: list[Event] = []
    last = options.minutes - 1
    for device in devices:
        for minute in range(options.minutes):
            if 0 < minute < last and rng.random() < options.missing_rate:
                continue
            offset = rng.randrange(60 * SECOND) // 1_000 * 1_000  # microsecond digits
            event = Event(device, "heartbeat", _at(start_ns, minute, offset))
            events.append(event)
            if rng.random() < options.duplicate_rate:
                events.append(event)
        for _ in range(options.uploads):
            minute = rng.randrange(options.minutes)
            upload_time = rng.randrange(10 * SECOND, 10 * MINUTE)
            events.append(Event(device, "upload", _at(start_ns, minute), upload_time))
    for index in range(len(events) - 1):
        if rng.random() < options.out_of_order:
            other = rng.randrange(index + 1, min(index + 20, len(events)))
            events[index], events[other] = events[other], events[index]
    return events


def assignment(seed: int = 1, start: str = DEFAULT_START) -> list[Event]:
    """The closed simulator's traffic: per sample device, 100 uploads sent at Go's zero time,
    then its heartbeats in time order on whole minutes, with the SPEC's counts and averages."""
    rng = random.Random(seed)
    start_ns = parse_rfc3339(start)
    events: list[Event] = []
    for device, (heartbeats, average) in ASSIGNMENT_FLEET.items():
        # Pairs average +- d keep every value near the average; the last adds a remainder
        # below 100 ns, so the mean must be truncated to give the table's figure.
        uploads = [average, average + rng.randrange(ASSIGNMENT_UPLOADS)]
        for _ in range((ASSIGNMENT_UPLOADS - 2) // 2):
            spread = rng.randrange(60 * SECOND)
            uploads += [average + spread, average - spread]
        rng.shuffle(uploads)
        events += [Event(device, "upload", ZERO_TIME, value) for value in uploads]
        inner = sorted(rng.sample(range(1, ASSIGNMENT_SPAN_MINUTES), heartbeats - 2))
        for minute in [0, *inner, ASSIGNMENT_SPAN_MINUTES]:
            events.append(Event(device, "heartbeat", _at(start_ns, minute)))
    return events


def expected_results(devices: Iterable[str], events: Iterable[Event]) -> dict[str, Expected]:
    """Replay ``events`` into a fresh :class:`MemoryStore` and read back each device's stats
    (the service's own rules: no second copy of the formulas)."""
    ids = list(dict.fromkeys(devices))
    store = MemoryStore(ids)
    for event in events:
        sent_at = parse_rfc3339(event.sent_at)
        if event.kind == "heartbeat":
            store.record(event.device_id, Heartbeat(sent_at), None)
        else:
            assert event.upload_time is not None
            store.record(event.device_id, Upload(sent_at, event.upload_time), None)
    results = {}
    for device in ids:
        snapshot = store.snapshot(device)
        results[device] = Expected(snapshot.uptime, format_duration(snapshot.avg_upload_ns))
    return results


def save(events: Iterable[Event], path: Path) -> None:
    """Write ``events`` as JSON Lines, one event a line, keys in a fixed order."""
    with path.open("w", encoding="utf-8", newline="\n") as file:
        for event in events:
            record: dict[str, Any] = {
                "device_id": event.device_id,
                "kind": event.kind,
                "sent_at": event.sent_at,
            }
            if event.upload_time is not None:
                record["upload_time"] = event.upload_time
            file.write(json.dumps(record, separators=(",", ":")) + "\n")


def _event(record: Any) -> Event:
    if not isinstance(record, dict):
        raise ScenarioError("expected a JSON object")
    device, kind, sent_at = record.get("device_id"), record.get("kind"), record.get("sent_at")
    if not isinstance(device, str) or not device:
        raise ScenarioError("device_id must be a non-empty string")
    if kind not in KINDS:
        raise ScenarioError("kind must be heartbeat or upload")
    if not isinstance(sent_at, str):
        raise ScenarioError("sent_at must be a string")
    try:
        parse_timestamp("sent_at", sent_at)
    except InvalidInputError as error:
        raise ScenarioError(str(error)) from None
    upload_time = record.get("upload_time")
    if kind == "upload" and (type(upload_time) is not int or upload_time < 0):
        raise ScenarioError("upload_time must be a non-negative integer for an upload")
    return Event(device, str(kind), sent_at, upload_time if kind == "upload" else None)


def load(path: Path) -> list[Event]:
    """Read a JSON Lines scenario; raises ScenarioError naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(f"{path}: cannot read scenario: {error}") from None
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(_event(json.loads(line)))
        except (ValueError, ScenarioError) as error:
            raise ScenarioError(f"{path}:{number}: {error}") from None
    return events
