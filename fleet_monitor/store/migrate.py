"""``fleet-monitor migrate``: a memory store's data directory copied into a Valkey store.

1. **Load, read only.** The directory is loaded into a :class:`MemoryStore` exactly as
   ``serve --data-dir`` loads it (the snapshot, the devices file's ids, the journal replayed
   after it, unlimited budgets), but nothing is written: no segment is created, no snapshot
   taken, and a torn tail of the last segment is skipped in memory, not cut off the file.
   Damage refuses with the start's one-line error.
2. **Copy.** Each device is replaced in the engine by one Lua script (:data:`PUT`): it deletes
   whatever the engine holds of that device (and takes its cost off ``fm:bytes``), then writes
   the keys as the write scripts of :mod:`~fleet_monitor.store.valkey_scripts` would have left
   them (the bitmap chunks' bits reversed into the engine's order, each upload a member
   ``seq:upload_ns`` scored by its minute, the idempotency keys with their fingerprints and a
   fresh 30-day expiry) and adds its cost. A removed id is deleted and put in ``fm:removed``.
   Running it again replaces each device by the same keys: nothing is doubled. Last,
   ``fm:bytes`` is recounted from every registered device's cost.
3. **Check.** Every device is read back through :class:`ValkeyStore` and compared with the
   memory store: its counters, heartbeat minutes and uploads over all time, its history
   cost and its number of keys; every removed id must be absent.

(Over 300 lines: the read-only loader, the copy and its script, and the check belong
together, and each is short.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from fleet_monitor.domain.bitmaps import FULL_CHUNK
from fleet_monitor.domain.errors import StoreUnavailableError, UnknownDeviceError
from fleet_monitor.domain.history import DeviceHistory
from fleet_monitor.domain.timestamps import MINUTE_NS
from fleet_monitor.store.durable import _decoded, replay
from fleet_monitor.store.journal_format import (
    CorruptJournalError,
    Entry,
    first_lsn,
    read_segment,
    segments,
)
from fleet_monitor.store.memory import MemoryStore
from fleet_monitor.store.snapshot import SnapshotError, read_snapshot
from fleet_monitor.store.valkey import KEY_TTL_S, PREFIX, REVERSED_BITS, ValkeyStore
from fleet_monitor.store.valkey_engine import engine_url, safe_url

# Every minute a store can hold with exact scores in the engine (its sorted sets are doubles).
EVER = (-(2**53), 2**53)
BATCH_ARGS = 100_000  # arguments sent in one pipeline (about a few MB)
TIMEOUT_S = 60.0  # a pipeline of large devices may take a while
_LOW32 = 0xFFFFFFFF
_PARTS = ("counters", "heartbeat minutes", "uploads", "(history bytes, keys)")
_RUN_AGAIN = " (the copy is incomplete: run it again, it replaces what it wrote)"
_REPAIR_HINT = "; migrate never writes to the directory: run fleet-monitor serve --repair on it"

# Replace (or, with an empty cost, remove) one device. KEYS: 1 device hash, 2 chunk set,
# 3 uploads, 4 key list, 5 fleet bytes, 6 registry, 7 removed set, 8 last-seen index.
# ARGV: 1 id, 2 the chunks' name prefix, 3 the keys' name prefix, 4 the keys' expiry (s),
# 5 the device's cost ('' to remove it), 6 its last-seen score ('' for none), 7-10 how many
# hash values, chunks, uploads and keys follow: the hash's name/value pairs, then (index, bits)
# per chunk, (minute, member) per upload, (list entry, fingerprint) per key. Returns the
# device's cost before.
PUT = """
local old = tonumber(redis.call('HGET', KEYS[1], 'cost') or '0')
for _, index in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. index)
end
for _, entry in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
  redis.call('DEL', ARGV[3] .. entry)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local cost = 0
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[6], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('SADD', KEYS[7], ARGV[1])
else
  cost = tonumber(ARGV[5])
  local fields, chunks = tonumber(ARGV[7]), tonumber(ARGV[8])
  local uploads, keys = tonumber(ARGV[9]), tonumber(ARGV[10])
  local at = 11
  redis.call('HSET', KEYS[1], unpack(ARGV, at, at + fields - 1))
  at = at + fields
  for i = at, at + 2 * chunks - 1, 2 do
    redis.call('SET', ARGV[2] .. ARGV[i], ARGV[i + 1])
    redis.call('SADD', KEYS[2], ARGV[i])
  end
  at = at + 2 * chunks
  local last = at + 2 * uploads - 1
  for i = at, last, 1000 do
    redis.call('ZADD', KEYS[3], unpack(ARGV, i, math.min(i + 999, last)))
  end
  at = last + 1
  for i = at, at + 2 * keys - 1, 2 do
    redis.call('SET', ARGV[3] .. ARGV[i], ARGV[i + 1], 'EX', ARGV[4])
    redis.call('RPUSH', KEYS[4], ARGV[i])
  end
  redis.call('ZADD', KEYS[6], 0, ARGV[1])
  redis.call('SREM', KEYS[7], ARGV[1])
  if ARGV[6] == '' then
    redis.call('ZREM', KEYS[8], ARGV[1])
  else
    redis.call('ZADD', KEYS[8], ARGV[6], ARGV[1])
  end
end
if cost ~= old then redis.call('INCRBY', KEYS[5], cost - old) end
return old
"""

# The fleet's history bytes recounted: the sum of every registered device's cost. KEYS: 1
# fleet bytes, 2 registry. ARGV: 1 the name prefix. Returns {before, after} as text.
RECOUNT = """
local total = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  total = total + tonumber(redis.call('HGET', ARGV[1] .. '{' .. id .. '}:d', 'cost') or '0')
end
local before = redis.call('GET', KEYS[1]) or '0'
redis.call('SET', KEYS[1], string.format('%d', total))
return {before, string.format('%d', total)}
"""


class MigrationError(Exception):
    """The migration cannot be done; str() is one line saying why (exit status 2)."""


@dataclass
class Report:
    """What a migration copied and what its check found."""

    devices: int = 0
    removed: int = 0
    minutes: int = 0
    uploads: int = 0
    keys: int = 0
    history_bytes: int = 0
    replayed: int = 0
    notes: list[str] = field(default_factory=list)  # torn tails skipped, fm:bytes corrected
    differences: list[str] = field(default_factory=list)  # one line per device that differs
    windows: int = 0  # maintenance windows copied
    not_removed: list[str] = field(default_factory=list)  # removed ids the engine still holds

    @property
    def verified(self) -> int:
        """How many devices read back the same from the engine."""
        return self.devices - len(self.differences)

    @property
    def matches(self) -> bool:
        """Whether the engine answers for every device as the directory does."""
        return not self.differences and not self.not_removed


# --- 1. the directory, read only ---------------------------------------------------------


def load(directory: Path, device_ids: Iterable[str], notes: list[str]) -> tuple[MemoryStore, int]:
    """The memory store ``serve --data-dir directory`` would start with, and how many journal
    records were replayed; writes nothing. A torn tail skipped is added to ``notes``. Raises
    MigrationError (SnapshotError, CorruptJournalError: one line each)."""
    if not directory.is_dir():
        raise MigrationError(f"{directory}: no such data directory")
    try:
        return _load(directory, device_ids, notes)
    except SnapshotError as error:
        raise MigrationError(f"{error}{_REPAIR_HINT}") from None
    except CorruptJournalError as error:
        raise MigrationError(f"{error}{_REPAIR_HINT}") from None
    except OSError as error:
        raise MigrationError(
            f"{directory}: cannot read the data directory: {error.strerror or error}"
        ) from None


def _load(directory: Path, device_ids: Iterable[str], notes: list[str]) -> tuple[MemoryStore, int]:
    store = MemoryStore()  # unlimited budgets: what was accepted once is never refused
    snapshot = read_snapshot(directory)
    try:
        decoded = _decoded(snapshot)
    except SnapshotError as error:
        raise SnapshotError(f"{directory / 'snapshot.jsonl'}: {error}") from None
    for device in decoded:
        store.restore(*device)
    covered = 1
    if snapshot is not None:
        store.removed, store.registry_lsn = set(snapshot.removed), snapshot.registry_lsn
        covered = snapshot.next_lsn
    found = segments(directory)
    if found and first_lsn(found[0]) > covered:
        raise MigrationError(
            f"{directory}: the journal starts at lsn {first_lsn(found[0])} but the snapshot "
            f"needs it from lsn {covered}: changes are missing"
        )
    store.add_all(device_ids)  # not those removed at run time
    replayed = 0
    for index, path in enumerate(found):
        last = index == len(found) - 1
        following = None if last else first_lsn(found[index + 1])
        for entry in read_segment_only(path, last=last, next_lsn=following, notes=notes):
            if entry.lsn >= covered:  # else the snapshot holds it
                replay(store, entry)
                replayed += 1
    return store, replayed


def read_segment_only(
    path: Path, *, last: bool, next_lsn: int | None, notes: list[str]
) -> Iterator[Entry]:
    """The entries of one segment, as ``journal.read_segment`` reads them without
    ``--repair``, but leaving the file as it is: a torn tail of the last segment is skipped
    (and said in ``notes``), not cut off. Raises CorruptJournalError with the same line."""

    def skip(torn: Path, offset: int, size: int, problem: str) -> None:
        notes.append(
            f"{torn}: skipped {size - offset} bytes at offset {offset} ({problem}): the last "
            "write before a crash, never acknowledged (the file is left as it is)"
        )

    return read_segment(path, last=last, repair=False, next_lsn=next_lsn, on_torn=skip)


# --- 2. the copy ---------------------------------------------------------------------------


def engine_bits(bits: bytes | bytearray) -> bytes:
    """A bitmap chunk (minute 0 the least significant bit of byte 0) as the engine's SETBIT
    leaves it (bit 0 the most significant bit of byte 0, no trailing zero bytes)."""
    return bytes(bits).translate(REVERSED_BITS).rstrip(b"\0")


def device_args(device_id: str, history: DeviceHistory, report: Report) -> list[Any]:
    """The arguments of :data:`PUT` that write ``history`` (counted into ``report``)."""
    minutes, fields = history.minutes, ["cost", history.cost()]
    chunks: list[Any] = []
    full = 0
    for index, bits in sorted(minutes.chunks()):
        full += bits is FULL_CHUNK
        chunks += [index, engine_bits(bits)]
    last_seen = ""
    if history.first_heartbeat_ns is not None and history.last_heartbeat_ns is not None:
        fm, fr = divmod(history.first_heartbeat_ns, MINUTE_NS)
        lm, lr = divmod(history.last_heartbeat_ns, MINUTE_NS)
        fields += ["n", len(minutes), "f", minutes.first, "l", minutes.last]
        fields += ["fm", fm, "fr", fr, "lm", lm, "lr", lr]
        last_seen = repr(history.last_heartbeat_ns / 1e9)  # as the heartbeat script has it
    if full:
        fields += ["full", full]
    if history.last_received_ns is not None:
        fields += ["rx", history.last_received_ns, "rs", history.last_received_sent_ns]
    if history.profile.to_json():
        fields += ["pf", history.profile.to_json()]
    upload_minutes, times = history.uploads.arrays()
    if history.upload_count and history.upload_min_ns is not None:
        low, high = history.upload_min_ns, history.upload_max_ns or 0
        fields += ["seq", len(times), "uc", history.upload_count]
        fields += ["uh", sum(t >> 32 for t in times), "ul", sum(t & _LOW32 for t in times)]
        fields += ["mnh", low >> 32, "mnl", low & _LOW32, "mxh", high >> 32, "mxl", high & _LOW32]
    uploads: list[Any] = []
    for seq, (minute, upload_ns) in enumerate(zip(upload_minutes, times, strict=True), 1):
        uploads += [minute, f"{seq}:{upload_ns}"]
    keys: list[Any] = []
    for kind, key, fingerprint in history.keys.items() if history.keys else ():
        keys += [f"{kind}:{key}", "*" if fingerprint is None else repr(fingerprint)]
    report.devices += 1
    report.minutes += len(minutes)
    report.uploads += len(times)
    report.keys += len(keys) // 2
    report.history_bytes += history.cost()
    counts = [len(fields), len(chunks) // 2, len(uploads) // 2, len(keys) // 2]
    return [history.cost(), last_seen, *counts, *fields, *chunks, *uploads, *keys]


def _names(device_id: str) -> tuple[list[str], list[Any]]:
    """The keys of :data:`PUT` for ``device_id`` and its first four arguments."""
    names = ValkeyStore._keys_of(device_id)
    keys = [
        names["device"],
        names["chunks"],
        names["uploads"],
        names["key_list"],
        PREFIX + "bytes",
        PREFIX + "registry",
        PREFIX + "removed",
        PREFIX + "lastseen",
    ]
    return keys, [device_id, names["chunk_prefix"], names["key_prefix"], KEY_TTL_S]


def copy(store: MemoryStore, engine: redis.Redis, report: Report) -> None:
    """Replace each device of ``store`` in the engine, remove its removed ids there, then
    recount ``fm:bytes``. Raises redis errors."""
    put = engine.register_script(PUT)
    _, removed, devices = store.registry_state()
    report.removed = len(removed)
    pipe, pending = engine.pipeline(transaction=False), 0
    for device_id, device in [*((i, None) for i in removed), *devices]:
        if device is None:
            args: list[Any] = ["", "", 0, 0, 0, 0]
        else:
            with device.lock:
                args = device_args(device_id, device.history, report)
        keys, head = _names(device_id)
        put(keys=keys, args=[*head, *args], client=pipe)
        pending += len(args)
        if pending >= BATCH_ARGS:
            pipe.execute()
            pipe, pending = engine.pipeline(transaction=False), 0
    pipe.execute()
    windows = store.maintenance()
    engine.delete(PREFIX + "maintenance")  # the dir's windows replace the engine's
    for window in windows:
        engine.hset(PREFIX + "maintenance", window.id, window.dumps())
    report.windows = len(windows)
    recount = engine.register_script(RECOUNT)
    answer = recount(keys=[PREFIX + "bytes", PREFIX + "registry"], args=[PREFIX])
    before, after = (int(value) for value in cast(list[bytes], answer))
    if before != after:
        report.notes.append(f"the engine counted {before} history bytes for {after}: recounted")


# --- 3. the check --------------------------------------------------------------------------


def observed(store: MemoryStore | ValkeyStore, device_id: str) -> tuple[object, ...]:
    """Everything a client can see of one device: its counters, and its heartbeat minutes and
    uploads over all time."""
    return (
        store.snapshot(device_id),
        store.heartbeat_counts(device_id, [EVER]),
        store.upload_aggregates(device_id, [EVER]),
    )


def check(store: MemoryStore, valkey: ValkeyStore, engine: redis.Redis, report: Report) -> None:
    """Compare every device of ``store`` with what ``valkey`` answers (and its cost and key
    count in ``engine``): a device that differs is a line of ``report.differences``, a
    removed id the engine holds one of ``report.not_removed``."""
    for device_id, device in store.devices():
        with device.lock:
            cost = device.history.cost()
            keys = len(list(device.history.keys.items())) if device.history.keys else 0
        expected = observed(store, device_id)
        try:
            got = observed(valkey, device_id)
        except UnknownDeviceError:
            report.differences.append(f"{device_id}: not in the engine")
            continue
        names = ValkeyStore._keys_of(device_id)
        engine_cost = int(cast(bytes, engine.hget(names["device"], "cost")) or 0)
        engine_keys = int(engine.llen(names["key_list"]))
        parts = zip(
            _PARTS, (*got, (engine_cost, engine_keys)), (*expected, (cost, keys)), strict=True
        )
        for part, held, wanted in parts:
            if held != wanted:
                report.differences.append(
                    f"{device_id}: {part} {held} in the engine, {wanted} in the dir"
                )
                break
    for device_id in sorted(store.removed):
        if device_id in valkey or not engine.sismember(PREFIX + "removed", device_id):
            report.not_removed.append(device_id)


def migrate(directory: Path, url: str, device_ids: Iterable[str]) -> Report:
    """Copy ``directory`` (a memory store's ``--data-dir``, with the devices file's ids) into
    the engine at ``url``, then check every device; raises MigrationError (nothing was
    written if the directory cannot be read; a failed copy can be run again)."""
    report = Report()
    engine = redis.Redis.from_url(
        engine_url(url), socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S / 10
    )
    valkey = ValkeyStore(url, timeout_s=TIMEOUT_S)
    try:
        _engine_call(url, engine.ping, "")
        store, report.replayed = load(directory, device_ids, report.notes)
        _engine_call(url, lambda: copy(store, engine, report), _RUN_AGAIN)
        _engine_call(url, lambda: check(store, valkey, engine, report), _RUN_AGAIN)
    finally:
        valkey.close()
        engine.close()
    return report


def _engine_call(url: str, work: Callable[[], object], hint: str) -> None:
    """Run ``work``; an engine's failure becomes one line naming the engine, then ``hint``."""
    try:
        work()
    except (redis.RedisError, StoreUnavailableError, OSError) as error:
        text = " ".join(str(error).split())
        raise MigrationError(f"{safe_url(url)}: {type(error).__name__}: {text}{hint}") from None
