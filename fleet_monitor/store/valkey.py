"""The Valkey store: the same Store, kept in Valkey 8+ (or Redis 7+), shared by many processes.

Each write is one Lua script (:mod:`~fleet_monitor.store.valkey_scripts`): atomic, one round
trip. Each read is one call or one pipeline. The layout (``docs/scale-out.md``) mirrors the
memory store: per device a hash of counters (so ``snapshot`` is one HMGET), its minute bitmap
in 4,096-bit chunks (offsets stay below 2^32 whatever the year), its uploads in a sorted set by
minute, and its idempotency keys (``SET NX``-style, with an expiry, the latest 1,024 kept);
fleet-wide, the registry (a sorted set, paged by id), the ids removed at run time, the fleet's
history bytes, and each device's last heartbeat (a sorted set by time). The rules are the
domain's: the same costs, messages and errors as the memory store.

Every engine call has a timeout. An engine that cannot be reached, is loading, times out or
refuses writes for now raises :class:`EngineUnavailableError` (503, retry in a second; see
:mod:`~fleet_monitor.store.valkey_engine`); ``problem`` (``/readyz``) says so, a PING at most
once a second telling when it is over.

Over 300 lines: one class, the Store protocol's methods each over the engine; split, the key
names and the scripts' arguments would be spread over several files.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import (
    ResponseError,
)
from redis.retry import Retry

from fleet_monitor.domain.bitmaps import (
    CHUNK_MINUTES,
    FULL_CHUNK_COST,
    PARTIAL_CHUNK_COST,
)
from fleet_monitor.domain.devices import check_device_id
from fleet_monitor.domain.errors import (
    IdempotencyConflictError,
    LimitExceededError,
    UnknownDeviceError,
)
from fleet_monitor.domain.events import Event, Heartbeat, Upload
from fleet_monitor.domain.group_index import GroupTotals
from fleet_monitor.domain.history import DeviceHead, DeviceSnapshot
from fleet_monitor.domain.idempotency import KEY_OVERHEAD, KEYS_PER_DEVICE, key_conflict, key_cost
from fleet_monitor.domain.limits import (
    UNLIMITED,
    UPLOAD_COST,
    device_history_full,
    fleet_full,
    fleet_history_full,
    windows_full,
)
from fleet_monitor.domain.maintenance import MAX_WINDOWS, MaintenanceWindow, by_start
from fleet_monitor.domain.profiles import EMPTY, FILE_MARK, Profile
from fleet_monitor.domain.timestamps import MINUTE_NS
from fleet_monitor.domain.uploads import UploadAggregate
from fleet_monitor.store import valkey_scripts
from fleet_monitor.store.valkey_engine import (
    ENGINE_ERRORS,
    EngineUnavailableError,
    ThreadConnections,
    engine_url,
    is_refusal,
    safe_url,
)

PREFIX = "fm:"
KEY_TTL_S = 30 * 24 * 3600  # an idempotency key is kept 30 days (and among the latest 1,024)
TIMEOUT_S = 2.0
CHUNKS_PER_READ = 64  # chunk strings fetched in one pipeline (32 KB)
# Each byte with its bits in the other order: the engine's bit 0 (SETBIT offset 0) is a byte's
# highest, the memory store's its lowest.
REVERSED_BITS = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))
PROBE_INTERVAL_S = 1.0
PIPELINE_BATCH = 1000
_FIELDS = (
    *("n", "f", "l", "fm", "fr", "lm", "lr", "uc", "uh", "ul", "mnh", "mnl", "mxh", "mxl"),
    *("rx", "rs", "pf"),
)
T = TypeVar("T")


class ValkeyStore:
    """The fleet in Valkey; safe across threads and processes."""

    def __init__(
        self,
        url: str,
        *,
        per_device_bytes: int = UNLIMITED,
        fleet_bytes: int = UNLIMITED,
        max_devices: int = UNLIMITED,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.url = safe_url(url)
        self.per_device_bytes, self.fleet_bytes = per_device_bytes, fleet_bytes
        self.max_devices = max_devices
        # No retries: a write whose reply was lost may have been applied, and a retry could
        # apply an upload twice, or answer 404 to a removal that worked. The client is told
        # 503 instead (a retry with the same Idempotency-Key is harmless).
        self._engine = redis.Redis.from_url(
            engine_url(url),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),
        )
        self._writes = ThreadConnections(self._engine.connection_pool)
        self._heartbeat = self._engine.register_script(valkey_scripts.HEARTBEAT)
        self._upload = self._engine.register_script(valkey_scripts.UPLOAD)
        self._register = self._engine.register_script(valkey_scripts.REGISTER)
        self._remove = self._engine.register_script(valkey_scripts.REMOVE)
        self._profile = self._engine.register_script(valkey_scripts.PROFILE)
        self._add_window = self._engine.register_script(valkey_scripts.ADD_WINDOW)
        self._file_profile = self._engine.register_script(valkey_scripts.FILE_PROFILE)
        self._lease = self._engine.register_script(valkey_scripts.LEASE)
        self._problem: str | None = None
        self._probed_at = -float("inf")
        self._lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------

    def _call(self, work: Callable[[], T]) -> T:
        """Run one engine call; an engine fault becomes EngineUnavailableError (and the
        store's problem until a PING works)."""
        try:
            result = work()
        except ENGINE_ERRORS as error:
            message = self._unreachable(error)
            raise EngineUnavailableError(message) from None
        except ResponseError as error:
            if not is_refusal(error):
                raise
            message = f"{self.url} refused the change ({error})"
            self._note(f"the store refuses changes: {message}")
            raise EngineUnavailableError(message) from None
        if self._problem is not None:
            with self._lock:
                self._problem = None
        return result

    def _unreachable(self, error: Exception) -> str:
        """Note that the engine did not answer; return what happened."""
        message = f"{self.url} did not answer ({type(error).__name__}: {error})"
        self._note(f"cannot reach the store: {message}")
        return message

    def _note(self, problem: str) -> None:
        with self._lock:
            self._problem, self._probed_at = problem, time.monotonic()

    @staticmethod
    def _device_key(device_id: str) -> str:
        return f"{PREFIX}{{{device_id}}}:d"

    @staticmethod
    def _keys_of(device_id: str) -> dict[str, str]:
        tag = f"{PREFIX}{{{device_id}}}:"
        return {
            "device": tag + "d",
            "chunks": tag + "cs",
            "uploads": tag + "u",
            "key_list": tag + "kq",
            "chunk_prefix": tag + "c:",
            "key_prefix": tag + "k:",
        }

    # --- the registry ---------------------------------------------------------------------

    def add_all(self, device_ids: Iterable[str]) -> int:
        """Register each id of a devices file that is not in the fleet and was not removed at
        run time (unchecked, past ``max_devices`` too); return how many were new."""
        found = self._call(lambda: self._engine.smembers(PREFIX + "removed"))
        removed = {member.decode() for member in cast(set[bytes], found)}
        wanted = [device_id for device_id in dict.fromkeys(device_ids) if device_id not in removed]
        added = 0
        for start in range(0, len(wanted), PIPELINE_BATCH):
            batch = wanted[start : start + PIPELINE_BATCH]
            pipe = self._engine.pipeline(transaction=False)
            for device_id in batch:
                self._register(
                    keys=[self._device_key(device_id), PREFIX + "registry", PREFIX + "removed"],
                    args=[device_id, 0],
                    client=pipe,
                )
            added += sum(1 for answer in self._call(pipe.execute) if answer == 1)
        return added

    def register(self, device_id: str) -> bool:
        """Add ``device_id``; return False if it was there. Raises LimitExceededError past
        ``max_devices``."""
        check_device_id(device_id)
        most = 0 if self.max_devices == UNLIMITED else self.max_devices
        answer = self._call(
            lambda: self._writes.run(
                self._register,
                [self._device_key(device_id), PREFIX + "registry", PREFIX + "removed"],
                [device_id, most],
            )
        )
        if isinstance(answer, list):
            raise fleet_full(int(answer[1]))
        return bool(answer == 1)

    def remove(self, device_id: str) -> None:
        """Remove ``device_id`` and its whole history; raises UnknownDeviceError."""
        keys = self._keys_of(device_id)
        done = self._call(
            lambda: self._writes.run(
                self._remove,
                [
                    keys["device"],
                    keys["chunks"],
                    keys["uploads"],
                    keys["key_list"],
                    PREFIX + "bytes",
                    PREFIX + "registry",
                    PREFIX + "removed",
                    PREFIX + "lastseen",
                ],
                [device_id, keys["chunk_prefix"], keys["key_prefix"]],
            )
        )
        if done != 1:
            raise UnknownDeviceError(device_id)

    def set_profile(self, device_id: str, profile: Profile) -> None:
        """Give ``device_id`` ``profile``; raises UnknownDeviceError."""
        done = self._call(
            lambda: self._writes.run(
                self._profile, [self._device_key(device_id)], [profile.to_json()]
            )
        )
        if done != 1:
            raise UnknownDeviceError(device_id)

    def apply_file_profiles(self, profiles: Mapping[str, Profile]) -> int:
        """Give each device the profile of its devices-file row (``profiles``: the whole
        file's; a device without one gets none), unless the API set its profile (pipelines
        of scripts over the whole fleet); return how many changed."""
        changed = 0
        ids = self.ids_after(None, UNLIMITED)
        for start in range(0, len(ids), PIPELINE_BATCH):
            pipe = self._engine.pipeline(transaction=False)
            for device_id in ids[start : start + PIPELINE_BATCH]:
                self._file_profile(
                    keys=[self._device_key(device_id)],
                    args=[profiles.get(device_id, EMPTY).to_json(), FILE_MARK],
                    client=pipe,
                )
            changed += sum(1 for answer in self._call(pipe.execute) if answer == 1)
        return changed

    # --- what one process does for all (the alerts) ------------------------------------------

    def hold_lease(self, name: str, holder: str, life_ms: int) -> bool:
        """Take lease ``name`` for ``holder`` when it is free, or keep it (for ``life_ms``
        more) when ``holder`` has it; whether ``holder`` has it now."""
        key = PREFIX + "lease:" + name
        return bool(self._call(lambda: self._lease(keys=[key], args=[holder, life_ms])))

    def get_blob(self, name: str) -> bytes | None:
        """The bytes kept as ``name``, or None."""
        return cast(bytes | None, self._call(lambda: self._engine.get(PREFIX + "blob:" + name)))

    def set_blob(self, name: str, data: bytes) -> None:
        """Keep ``data`` as ``name``."""
        self._call(lambda: self._engine.set(PREFIX + "blob:" + name, data))

    # --- maintenance windows ----------------------------------------------------------------

    def maintenance(self) -> list[MaintenanceWindow]:
        """The maintenance windows (one HGETALL), by start."""
        found = cast(
            dict[bytes, bytes], self._call(lambda: self._engine.hgetall(PREFIX + "maintenance"))
        )
        return by_start(MaintenanceWindow.loads(text.decode()) for text in found.values())

    def add_maintenance(self, window: MaintenanceWindow) -> None:
        """Keep ``window``; raises LimitExceededError past MAX_WINDOWS."""
        answer = self._call(
            lambda: self._writes.run(
                self._add_window,
                [PREFIX + "maintenance"],
                [window.id, window.dumps(), MAX_WINDOWS],
            )
        )
        if isinstance(answer, list):
            raise windows_full(int(answer[1]))

    def remove_maintenance(self, window_id: str) -> bool:
        """Drop a window; False if there was none of that id."""
        return bool(self._call(lambda: self._engine.hdel(PREFIX + "maintenance", window_id)))

    def __contains__(self, device_id: object) -> bool:
        if not isinstance(device_id, str):
            return False
        return bool(self._call(lambda: self._engine.exists(self._device_key(device_id))))

    def __len__(self) -> int:
        return int(self._call(lambda: self._engine.zcard(PREFIX + "registry")))

    def __iter__(self) -> Iterator[str]:
        """The ids in id order."""
        return iter(self.ids_after(None, UNLIMITED))

    def ids_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` ids in sorted order, each greater than ``after``."""
        low = "-" if after is None else f"({after}"
        found = self._call(
            lambda: self._engine.zrangebylex(PREFIX + "registry", low, "+", start=0, num=count)
        )
        return [member.decode() for member in cast(list[bytes], found)]

    # --- writes ---------------------------------------------------------------------------

    def record(self, device_id: str, event: Event, key: str | None, *, wait: bool = True) -> bool:
        """Record ``event`` once per ``key``; return False for a repeat, and for a heartbeat
        whose minute the device already had. Durable as the engine's AOF promises once it
        returns (``wait`` changes nothing here)."""
        script, keys, args = self._write(device_id, event, key)
        answer = self._call(lambda: self._writes.run(script, keys, args))
        return self._verdict(answer, device_id, event, key)

    def record_many(self, events: Sequence[tuple[str, Event]]) -> list[bool | Exception]:
        """Record each ``(device id, event)`` (no keys) in one pipeline, one round trip; for
        each, what :meth:`record` returns or the refusal it raises (an unknown device, a full
        budget). Raises EngineUnavailableError when the engine fails: which events were
        recorded is then unknown, and a retry is harmless for heartbeats only."""
        writes = [self._write(device_id, event, None) for device_id, event in events]
        answers = self._call(lambda: self._writes.run_many(writes))
        outcomes: list[bool | Exception] = []
        for (device_id, event), answer in zip(events, answers, strict=True):
            try:
                outcomes.append(self._verdict(answer, device_id, event, None))
            except (UnknownDeviceError, LimitExceededError, IdempotencyConflictError) as error:
                outcomes.append(error)
        return outcomes

    def _write(
        self, device_id: str, event: Event, key: str | None
    ) -> tuple[Script, list[str], list[Any]]:
        """The script, keys and arguments that record ``event``."""
        names = self._keys_of(device_id)
        entry = "" if key is None else f"{event.kind}:{key}"
        common = [
            entry,
            "" if key is None else repr(event.fingerprint),
            self.per_device_bytes,
            self.fleet_bytes,
            KEY_TTL_S,
            KEYS_PER_DEVICE,
            names["key_prefix"],
            0 if key is None else key_cost(event.kind, key),
            KEY_OVERHEAD - 1,  # an entry "kind:key" has one character more than kind and key
        ]
        key_string = names["key_prefix"] + entry
        if isinstance(event, Heartbeat):
            minute, remainder = divmod(event.sent_at_ns, MINUTE_NS)
            index, bit = divmod(minute, CHUNK_MINUTES)
            keys = [
                names["device"],
                names["chunk_prefix"] + str(index),
                key_string,
                names["key_list"],
                PREFIX + "bytes",
                names["chunks"],
                PREFIX + "lastseen",
            ]
            args = [
                *common,
                minute,
                index,
                bit,
                minute,
                remainder,
                PARTIAL_CHUNK_COST,
                FULL_CHUNK_COST,
                CHUNK_MINUTES,
                device_id,
                repr(event.sent_at_ns / 1e9),
                "" if event.received_ns is None else event.received_ns,
                event.sent_at_ns,
            ]
            return self._heartbeat, keys, args
        assert isinstance(event, Upload)
        upload_ns = event.upload_time_ns
        keys = [
            names["device"],
            names["uploads"],
            key_string,
            names["key_list"],
            PREFIX + "bytes",
        ]
        args = [
            *common,
            event.sent_at_ns // MINUTE_NS,
            upload_ns,
            upload_ns >> 32,
            upload_ns & 0xFFFFFFFF,
            UPLOAD_COST,
        ]
        return self._upload, keys, args

    def _verdict(self, answer: Any, device_id: str, event: Event, key: str | None) -> bool:
        """A write script's answer as :meth:`record` returns it, or the refusal it raises."""
        verdict = answer[0].decode()
        if verdict == "ok":
            return bool(int(answer[1]))
        if verdict == "repeat":
            return False
        self._refuse(verdict, answer, device_id, event, key)
        raise AssertionError("unreachable")

    def _refuse(
        self, verdict: str, answer: list[bytes], device_id: str, event: Event, key: str | None
    ) -> None:
        if verdict == "unknown":
            raise UnknownDeviceError(device_id)
        if verdict == "conflict":
            assert key is not None
            raise key_conflict(event.kind, key)
        if verdict == "device_budget":
            raise device_history_full(int(answer[1]), self.per_device_bytes)
        if verdict == "fleet_budget":
            raise fleet_history_full(int(answer[1]), self.fleet_bytes)
        raise RuntimeError(f"unexpected answer from the store: {answer!r}")

    def flush(self) -> None:
        """Nothing to wait for: every write returned once the engine had it."""

    # --- reads ----------------------------------------------------------------------------

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """One device's counters: one HMGET; raises UnknownDeviceError."""
        values = self._call(
            lambda: self._engine.hmget(self._device_key(device_id), ["cost", *_FIELDS])
        )
        return _snapshot(device_id, cast(list[bytes | None], values))

    def snapshots(self) -> Iterator[DeviceSnapshot]:
        """Every device's counters, a pipeline of HMGETs per thousand devices."""
        ids = self.ids_after(None, UNLIMITED)
        for start in range(0, len(ids), PIPELINE_BATCH):
            batch = ids[start : start + PIPELINE_BATCH]
            pipe = self._engine.pipeline(transaction=False)
            for device_id in batch:
                pipe.hmget(self._device_key(device_id), ["cost", *_FIELDS])
            answers = self._call(pipe.execute)
            for device_id, values in zip(batch, answers, strict=True):
                if values[0] is not None:  # removed since the ids were read
                    yield _snapshot(device_id, values)

    def heads(self) -> Iterator[DeviceHead]:
        """What each device's state is judged on (from :meth:`snapshots`)."""
        for snapshot in self.snapshots():
            yield DeviceHead.of(snapshot.device_id, snapshot)

    def group_totals(self, key: str, now: int, windows: Sequence[int]) -> GroupTotals | None:
        """None: the engine keeps no group index (stateless nodes could not keep one up to
        date), so groups are counted device by device."""
        return None

    def heartbeat_counts(self, device_id: str, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """For each ``(start, end)``, the heartbeat minutes ``start <= m < end`` (see
        :meth:`heartbeat_counts_many`: two round trips, whatever the number of ranges)."""
        return self.heartbeat_counts_many([(device_id, ranges)])[0]

    def heartbeat_counts_many(
        self, requests: Sequence[tuple[str, Sequence[tuple[int, int]]]]
    ) -> list[list[int]]:
        """:meth:`heartbeat_counts` of many devices (zeros for one not in the fleet): for each
        thousand, their chunk indices (one pipeline of SMEMBERS), then one pipeline of
        BITCOUNTs over the chunks each range meets: two round trips a thousand devices."""
        results: list[list[int]] = []
        for at in range(0, len(requests), PIPELINE_BATCH):
            batch = requests[at : at + PIPELINE_BATCH]
            pipe = self._engine.pipeline(transaction=False)
            for device_id, _ in batch:
                pipe.smembers(self._keys_of(device_id)["chunks"])
            found = cast(list[set[bytes]], self._call(pipe.execute))
            pipe = self._engine.pipeline(transaction=False)
            plans: list[list[int]] = []
            for (device_id, ranges), members in zip(batch, found, strict=True):
                prefix = self._keys_of(device_id)["chunk_prefix"]
                plans.append(_plan_counts(pipe, prefix, sorted(map(int, members)), ranges))
            wanted = any(any(plan) for plan in plans)
            counts = iter(cast(list[int], self._call(pipe.execute)) if wanted else [])
            results += [[sum(next(counts) for _ in range(n)) for n in plan] for plan in plans]
        return results

    def heartbeat_chunks(self, device_id: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The device's bitmap chunks meeting ``start <= m < end``: its chunk indices (one
        SMEMBERS), then the chunks' strings in pipelines of :data:`CHUNKS_PER_READ` as the
        caller goes (the engine's bits are first-minute-highest in each byte)."""
        keys = self._keys_of(device_id)
        found = self._call(lambda: self._engine.smembers(keys["chunks"]))
        if not found and not self._call(lambda: self._engine.exists(keys["device"])):
            raise UnknownDeviceError(device_id)
        if end <= start:
            return
        low, high = start // CHUNK_MINUTES, (end - 1) // CHUNK_MINUTES
        indices = sorted(i for i in map(int, cast(set[bytes], found)) if low <= i <= high)
        for at in range(0, len(indices), CHUNKS_PER_READ):
            batch = indices[at : at + CHUNKS_PER_READ]
            pipe = self._engine.pipeline(transaction=False)
            for index in batch:
                pipe.get(keys["chunk_prefix"] + str(index))
            for index, bits in zip(batch, self._call(pipe.execute), strict=True):
                if bits:
                    yield index, int.from_bytes(bits.translate(REVERSED_BITS), "little")

    def upload_aggregates(
        self, device_id: str, ranges: Sequence[tuple[int, int]]
    ) -> list[UploadAggregate]:
        """For each ``(start, end)``, the uploads of minutes ``start <= m < end``: one read of
        the uploads in the whole span, then bucketed here (exact sums beyond int64)."""
        if not ranges:
            return []
        low, high = min(s for s, _ in ranges), max(e for _, e in ranges)
        found = self._call(
            lambda: self._engine.zrangebyscore(
                self._keys_of(device_id)["uploads"], low, f"({high}", withscores=True
            )
        )
        pairs = sorted(
            (int(score), int(member.split(b":")[1]))
            for member, score in cast(list[tuple[bytes, float]], found)
        )
        minutes = [minute for minute, _ in pairs]
        result = []
        for start, end in ranges:
            times = [
                t
                for _, t in pairs[
                    bisect.bisect_left(minutes, start) : bisect.bisect_left(minutes, end)
                ]
            ]
            result.append(
                UploadAggregate(len(times), sum(times), min(times), max(times))
                if times
                else UploadAggregate()
            )
        return result

    def history_bytes(self) -> int:
        """Estimated bytes of history the fleet holds (the same measure as the memory store)."""
        return int(self._call(lambda: self._engine.get(PREFIX + "bytes")) or 0)

    def problem(self) -> str | None:
        """Why changes cannot be stored now (the engine unreachable, or refusing writes), or
        None. Asked by ``/readyz``: a PING at most once a second tells, so a load balancer
        sees an engine gone before any write fails; an engine that answers it is taken as
        ready again (a refusal, such as out of memory, shows again at the next refused write).
        """
        with self._lock:
            now = time.monotonic()
            due = now - self._probed_at >= PROBE_INTERVAL_S
            if due:
                self._probed_at = now
        if due:
            try:
                self._engine.ping()
            except ENGINE_ERRORS as error:
                self._unreachable(error)
            else:
                with self._lock:
                    self._problem = None
        return self._problem

    def close(self) -> None:
        """Close the engine's connections."""
        self._writes.close()
        self._engine.close()


def _plan_counts(
    pipe: Pipeline, prefix: str, indices: list[int], ranges: Sequence[tuple[int, int]]
) -> list[int]:
    """Add to ``pipe`` the BITCOUNTs of each range over the chunks (``indices``, sorted) it
    meets; return how many each range added."""
    pieces: list[int] = []
    for start, end in ranges:
        first = bisect.bisect_left(indices, start // CHUNK_MINUTES)
        last = bisect.bisect_right(indices, (end - 1) // CHUNK_MINUTES)
        for index in indices[first:last]:
            base = index * CHUNK_MINUTES
            low, high = max(start, base) - base, min(end, base + CHUNK_MINUTES) - base - 1
            pipe.bitcount(prefix + str(index), low, high, mode="BIT")
        pieces.append(max(0, last - first))
    return pieces


def _number(value: bytes | None) -> int | None:
    return None if value is None else int(value)


def _snapshot(device_id: str, values: list[bytes | None]) -> DeviceSnapshot:
    """A snapshot from HMGET's ``cost`` and :data:`_FIELDS` values."""
    if values[0] is None:
        raise UnknownDeviceError(device_id)
    n, f, last, fm, fr, lm, lr, uc, uh, ul, mnh, mnl, mxh, mxl, rx, rs = (
        _number(v) for v in values[1:-1]
    )
    profile = values[-1]
    count = uc or 0
    return DeviceSnapshot(
        device_id,
        n or 0,
        f,
        last,
        None if fm is None else fm * MINUTE_NS + (fr or 0),
        None if lm is None else lm * MINUTE_NS + (lr or 0),
        count,
        ((uh or 0) << 32) + (ul or 0),
        None if mnh is None else (mnh << 32) + (mnl or 0),
        None if mxh is None else (mxh << 32) + (mxl or 0),
        rx,
        rs,
        EMPTY if profile is None else Profile.from_json(profile.decode()),
    )
