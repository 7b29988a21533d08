"""The benchmark's own pieces (never its figures): load script, wrk parsing, memory probe."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from benchmarks.load import batch_body, batch_lua, fleet_ids, fleet_lua, heartbeat_lua, parse_wrk
from benchmarks.page import TABLE_HEAD, compose, paragraphs, row, table_rows
from benchmarks.run import markdown, memory, percentile
from benchmarks.servers import ceiling_app
from benchmarks.soak_page import soak_section

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40000/api/v1/devices/x/heartbeat
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     7.01ms    1.20ms  30.00ms   90.00%
  13805 requests in 10.00s, 1.01MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1380.52
Transfer/sec:    103.50KB
"""


def test_fleet_script_names_every_device_in_turn_with_lua51_syntax() -> None:
    script = fleet_lua(1000)
    assert '"/api/v1/devices/fleet-%06d/heartbeat", n % 1000' in script
    assert "math.floor(n / 1000)" in script and "//" not in script
    assert fleet_ids(3) == ["fleet-000000", "fleet-000001", "fleet-000002"]


def test_the_ceiling_reads_the_body_and_answers_204_with_nothing_else() -> None:
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = io.BytesIO(b'{"sent_at": "2024-01-01T00:00:00Z"}')
    environ = {"CONTENT_LENGTH": "35", "wsgi.input": body}
    answer = ceiling_app(environ, lambda status, headers: started.append((status, headers)))  # type: ignore[arg-type]
    assert (started, list(answer), body.read()) == ([("204 No Content", [])], [], b"")


def test_lua_script_posts_to_the_path_with_lua51_syntax() -> None:
    script = heartbeat_lua("/api/v1/devices/60-6b-44-84-dc-64/heartbeat")
    assert 'wrk.format(nil, "/api/v1/devices/60-6b-44-84-dc-64/heartbeat", nil, body)' in script
    assert 'wrk.method = "POST"' in script
    code = "\n".join(line for line in script.splitlines() if not line.startswith("--"))
    assert "//" not in code  # LuaJIT has no integer division operator


def test_batch_body_is_valid_json_with_distinct_minutes() -> None:
    body = json.loads(batch_body("d-1", 1500))
    minutes = {event["sent_at"] for event in body["events"]}
    assert len(body["events"]) == len(minutes) == 1500
    assert body["events"][1441] == {
        "device_id": "d-1",
        "type": "heartbeat",
        "sent_at": "2024-01-02T00:01:00Z",
    }
    assert "wrk.body = [[" + batch_body("d", 2) + "]]" in batch_lua(batch_body("d", 2))


def test_parse_wrk() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests_per_second == 1380.52
    assert result.errors == 4 + 2 + 1


def test_parse_wrk_without_errors() -> None:
    assert parse_wrk("Requests/sec:  10.5\n").errors == 0


def test_percentile_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([3.0], 99) == 3.0


def test_memory_probe_with_missing_minutes_costs_more() -> None:
    full = memory(devices=2, days=6, uploads=0)
    gappy = memory(devices=2, days=6, uploads=0, missing=0.02)
    assert gappy["missing"] == 0.02
    assert isinstance(full["bytes_per_device"], int)
    assert isinstance(gappy["bytes_per_device"], int)
    assert gappy["bytes_per_device"] > full["bytes_per_device"]  # no chunk is full


def test_memory_probe_on_a_small_fleet() -> None:
    figures = memory(devices=3, days=2, uploads=5)
    assert figures["devices"] == 3
    assert figures["raw_bitmap_bytes_per_day"] == 180.0
    per_device = figures["bytes_per_device"]
    assert isinstance(per_device, int)
    assert 2 * 180 < per_device < 20_000


INGEST = {
    "generator": "wrk",
    "ceiling_rps": 10.0,
    "floor_rps": 4.0,
    "service_rps": 8.6,
    "quiet_rps": 9.1,
    "json_rps": 8.0,
    "json_ratio": 0.8,
    "floor_ratio": 0.4,
    "floor_range": "0.38 to 0.41",
    "service_range": "0.80 to 0.90",
    "json_range": "0.75 to 0.85",
    "quiet_range": "0.88 to 0.95",
    "service_ratio": 0.86,
    "quiet_ratio": 0.91,
}


def test_results_page(tmp_path: Path) -> None:
    results: dict[str, dict[str, object]] = {
        "ingest": INGEST,
        "stats": {
            "small_p50_ms": 1,
            "small_p99_ms": 2,
            "big_p50_ms": 1,
            "big_p99_ms": 2,
            "p50_ratio": 1.0,
            "p99_ratio": 1.0,
        },
        "memory": {
            "devices": 3,
            "days": 30,
            "bytes_per_device": 6000,
            "bytes_per_device_day": 200.0,
            "raw_bitmap_bytes_per_day": 180.0,
            "beyond_200_per_day_bytes": 0,
        },
        "startup": {
            "devices": 10,
            "five_devices_listening_s": 0.3,
            "five_devices_ready_s": 0.3,
            "large_csv_listening_s": 0.4,
            "large_csv_ready_s": 0.5,
        },
        "scrape": {
            "devices": 10,
            "default_s": 0.1,
            "default_bytes": 10,
            "per_device_s": 0.2,
            "per_device_bytes": 20,
            "fleet_lock_held_ms": 1.0,
            "writer_max_ms": 2.0,
            "writer_ops": 3,
        },
    }
    results["memory_gappy"] = {**results["memory"], "missing": 0.02}
    results["batch"] = {
        "events_per_request": 1000,
        "service_events_per_s": 20000,
        "everysec_events_per_s": 10000,
    }
    results["durability"] = {"service": 4.0, "no": 3.0, "everysec": 2.0, "always": 1.0}
    results["costly_reads"] = {
        "readers": 16,
        "alone_p50_ms": 1.0,
        "alone_p99_ms": 2.0,
        "beside_p50_ms": 20.0,
        "beside_p99_ms": 50.0,
        "reads_200": 5,
        "reads_429": 500,
        "p50_ratio": 20.0,
    }
    args = argparse.Namespace(seconds=1, rounds=1, memory_devices=3, only=None)
    page = markdown(results, args)
    assert page.startswith("# Benchmark results\n")
    assert "| 1 | heartbeat ingest from 1,000 devices in turn (wrk, 16 connections" in page
    assert (
        "waitress ceiling (a bare WSGI callable): 10.0 req/s; Flask floor: 4.0 req/s (0.4 of"
        in page
    )
    assert "0.86 of the ceiling with the access log (rounds 0.80 to 0.90; target ≥ 0.85); " in page
    assert "0.91 without (0.88 to 0.95; target ≥ 0.90): medians of each round's ratio" in page
    assert "| 3b | the same with 2% of minutes missing" in page
    assert "ready 0.5 s" in page
    assert "20000 events/s in memory; 10000 events/s with the journal" in page
    assert "`no` 3.0, `everysec` 2.0, `always` 1.0 req/s" in page
    assert "beside them: p50 20.0 ms, p99 50.0 ms; reads answered 5, refused 429 500" in page


def test_the_soak_section_survives_a_new_results_page(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text("# old\n\n<!-- soak:begin -->\nsoak table\n<!-- soak:end -->\n")
    assert soak_section(page) == "<!-- soak:begin -->\nsoak table\n<!-- soak:end -->"
    assert soak_section(tmp_path / "missing.md") == ""


VALKEY_RESULTS: dict[str, dict[str, object]] = {
    "valkey_ingest": {"generator": "wrk", "rounds": 3, "valkey_rps": 3.0, "memory_rps": 4.0,
                      "ratio": 0.75, "engine_us_per_write": 50.0},
    "valkey_workers": {"generator": "wrk", "rounds": 3, "connections": 32, "cores": 2,
                       "two_rps": 3.0, "one_rps": 2.0, "ratio": 1.5},
    "valkey_batch": {"events_per_request": 1000, "rounds": 3, "valkey_events_per_s": 5000,
                     "memory_events_per_s": 10000, "ratio": 0.5},
    "valkey_stats": {"small_p50_ms": 1, "small_p99_ms": 2, "big_p50_ms": 1, "big_p99_ms": 2,
                     "p50_ratio": 1.0, "p99_ratio": 1.0, "load_s": 9.5},
    "valkey_memory": {"devices": 3, "days": 30, "uploads": 100, "processes": 2, "load_s": 1.0,
                      "bytes_per_device": 12000, "bytes_per_device_day": 400.0,
                      "per_device": {"chunks": 9000, "uploads": 2000, "hash": 300,
                                     "chunk_set": 200, "fleet": 100, "keyspace": 400},
                      "chunks_per_device": 11.0, "bytes_per_chunk": 818,
                      "bits_bytes_per_chunk": 512, "keys_per_device": 14.0,
                      "encodings": {"fm:registry": "listpack", "fm:lastseen": "listpack",
                                    "uploads": "skiplist"}},
    "valkey_memory_reference": {"bytes_per_device_day": 200.0, "bytes_per_device": 6000},
}  # fmt: skip


def test_a_run_of_some_rows_replaces_them_and_keeps_the_others() -> None:
    whole = markdown(
        {"ingest": INGEST},
        argparse.Namespace(seconds=1, rounds=1, memory_devices=3, only=None),
    )
    assert "Measured " in whole and "| 1 | heartbeat ingest" in whole
    some = argparse.Namespace(seconds=2, rounds=3, memory_devices=3, only="valkey")
    page = markdown(VALKEY_RESULTS, some, whole)
    lines = page.splitlines()
    numbers = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][1:]
    assert numbers == ["1", "8a", "8b", "8c", "8d", "8e", "8f"]
    assert "service: 8.6 req/s" in page  # row 1 kept as it was
    assert "| memory store: 4.0 req/s | Valkey: 3.0 req/s | 0.75 of the memory store" in page
    assert "| 1.5\N{MULTIPLICATION SIGN} (target ≥ 1.4) |" in page
    assert "| Valkey: 5000 events/s | 0.5 of the memory store |" in page
    assert "1M minutes: p50 1 ms, p99 2 ms | p50 1.0, p99 1.0 (target ≤ 1.1) |" in page
    assert (
        "Valkey: 400.0 B per device-day (12000 B per device, 14.0 keys) | "
        "2.0\N{MULTIPLICATION SIGN} the memory" in page
    )
    assert "chunk bitmaps 9000 B (11.0 strings of 818 B each for 512 B of bits)" in page
    assert (
        "| one process, memory store: 240 devices | one process on Valkey: 180; one 2-core "
        "machine with `--workers 2` (engine and load generator on it too): 180; one Valkey "
        "primary at 50.0 µs of engine CPU a write: 1,200,000 devices, 6667 such nodes | "
        "engine memory at 30 days of history: 89,478 devices per GiB |" in page
    )
    note = [line for line in lines if line.startswith("Rows ")]
    assert len(note) == 1 and note[0].startswith("Rows 8a, 8b, 8c, 8d, 8e, 8f measured ")
    assert "--only valkey" in page
    again = markdown(VALKEY_RESULTS, some, page)  # a second such run: one note, not two
    assert len([line for line in again.splitlines() if line.startswith("Rows ")]) == 1


def test_a_run_of_some_rows_takes_them_out_of_earlier_notes() -> None:
    previous = (
        "# Benchmark results\n\nMeasured 2026-01-01.\n\n"
        "Rows 9a, 9b measured 2026-01-02 with `--only outages,group-by`.\n\n"
        "Rows 1 measured 2026-01-03.\n\n"
        f"{TABLE_HEAD}\n| 1 | a | b | c | d |\n| 9a | a | b | c | d |\n| 9b | a | b | c | d |\n"
    )
    page = compose([row("9b", "w", "r", "f", "t")], "2026-01-04", previous)
    assert paragraphs(page) == [
        "Measured 2026-01-01.",
        "Rows 9a measured 2026-01-02 with `--only outages,group-by`.",
        "Rows 1 measured 2026-01-03.",
        "Rows 9b measured 2026-01-04.",
    ]
    assert table_rows(page)["9b"] == "| 9b | w | r | f | t |"
    assert list(table_rows(page)) == ["1", "9a", "9b"]
