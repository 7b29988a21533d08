"""Damaged journals: --repair skips only the damaged records, a torn tail is only damage that
no valid record follows, and a repaired segment needs no --repair the next time."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest

from fleet_monitor.store.durable import DurableStore
from fleet_monitor.store.journal import MAGIC, CorruptJournalError, Entry, encode, read_segment
from fleet_monitor.store.memory import MemoryStore
from tests.support.state import BASE, MINUTE_NS, write_segment

RECORDS = 381  # the device dur-00
ENTRIES = [Entry(n, "h", "dur-00", sent_at_ns=BASE + n * MINUTE_NS) for n in range(1, RECORDS + 1)]


def flip(path: Path, offset: int, count: int = 4) -> None:
    """Invert ``count`` bytes of a file from ``offset``."""
    data = bytearray(path.read_bytes())
    for index in range(offset, offset + count):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def touched(offsets: list[int], start: int, count: int = 4) -> set[int]:
    """The indexes of the records that bytes ``start``..``start + count`` fall in."""
    ends = [*offsets[1:], 10**12]
    return {
        n
        for n, (a, b) in enumerate(zip(offsets, ends, strict=True))
        if a < start + count and start < b
    }


# where in record 190 the 4 flipped bytes start: length, checksum, payload, across the next
@pytest.mark.parametrize("where", [0, 4, 20, -2], ids=["length", "crc", "payload", "straddling"])
@pytest.mark.parametrize("last", [True, False], ids=["last-segment", "older-segment"])
def test_repair_keeps_every_undamaged_record(
    tmp_path: Path, where: int, last: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, ENTRIES)
    start = (offsets[191] if where < 0 else offsets[190]) + where
    flip(path, start)
    lost = touched(offsets, start)
    expected = [entry for n, entry in enumerate(ENTRIES) if n not in lost]
    with pytest.raises(CorruptJournalError, match=f"{path}: corrupt journal record at offset"):
        list(read_segment(path, last=last, repair=False))
    with caplog.at_level(logging.WARNING):
        assert list(read_segment(path, last=last, repair=True)) == expected
    assert len(expected) == RECORDS - len(lost)
    [warning] = [r for r in caplog.records if "--repair skipped" in r.getMessage()]
    fields = warning.fields  # type: ignore[attr-defined]
    assert (fields["first_lsn"], fields["last_lsn"]) == (min(lost) + 1, max(lost) + 1)
    assert fields["skipped_bytes"] == sum(len(encode(ENTRIES[n])) for n in lost)
    assert f"lsn {min(lost) + 1}" in warning.getMessage()
    # the segment was rewritten without the damage: the next start needs no --repair
    assert list(read_segment(path, last=last, repair=False)) == expected


def test_damage_in_the_last_segment_followed_by_a_valid_record_is_not_a_torn_tail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, ENTRIES)
    flip(path, offsets[100])  # the length now points past the end of the file
    with pytest.raises(CorruptJournalError) as raised:
        list(read_segment(path, last=True, repair=False))
    assert str(raised.value) == (
        f"{path}: corrupt journal record at offset {offsets[100]} (an incomplete record); "
        f"the next valid record is at offset {offsets[101]}: start with --repair to skip the "
        f"{offsets[101] - offsets[100]} damaged bytes"
    )
    assert path.stat().st_size == offsets[-1] + len(encode(ENTRIES[-1]))  # nothing was cut


@pytest.mark.parametrize("where", [0, 4, 20])
def test_a_damaged_last_record_with_nothing_after_it_is_still_cut_silently(
    tmp_path: Path, where: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, ENTRIES)
    flip(path, offsets[-1] + where)
    with caplog.at_level(logging.WARNING):
        assert list(read_segment(path, last=True, repair=False)) == ENTRIES[:-1]
    assert path.stat().st_size == offsets[-1]
    assert "the last write before a crash" in caplog.text


def test_damage_reaching_the_end_of_an_older_segment_reports_the_lost_lsns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, ENTRIES[:10])
    flip(path, offsets[8] + 20)  # records 9 and 10 of 10: nothing valid after the damage
    flip(path, offsets[9] + 20)
    with pytest.raises(CorruptJournalError, match="no valid record follows"):
        list(read_segment(path, last=False, repair=False))
    with caplog.at_level(logging.WARNING):
        kept = list(read_segment(path, last=False, repair=True, next_lsn=11))
    assert kept == ENTRIES[:8]
    assert "2 records, lsn 9 to 10" in caplog.text


def test_a_damaged_segment_header_is_skipped_by_repair(tmp_path: Path) -> None:
    path = tmp_path / "journal-1.log"
    write_segment(path, ENTRIES[:5])
    flip(path, 0, 2)
    with pytest.raises(CorruptJournalError, match="offset 0 \\(does not start with FMJ1\\)"):
        list(read_segment(path, last=True, repair=False))
    assert list(read_segment(path, last=True, repair=True)) == ENTRIES[:5]
    assert path.read_bytes().startswith(MAGIC)


def test_the_resync_scan_checks_only_records_that_start_like_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal-1.log"
    offsets = write_segment(path, ENTRIES)
    flip(path, offsets[1] + 8, 40)  # most of record 2's payload
    checks = 0
    real_crc32 = zlib.crc32

    def counting(data: bytes, value: int = 0) -> int:
        nonlocal checks
        checks += 1
        return real_crc32(data, value)

    monkeypatch.setattr(zlib, "crc32", counting)
    assert len(list(read_segment(path, last=True, repair=True))) == RECORDS - 1
    # one per record and one for the resync candidate (checked again when read): none per
    # byte of the 60 damaged ones
    assert checks <= RECORDS + 2


def test_a_repaired_middle_segment_replays_everything_else(tmp_path: Path) -> None:
    first = tmp_path / "journal-1.log"
    offsets = write_segment(first, ENTRIES[:200])
    write_segment(tmp_path / "journal-201.log", ENTRIES[200:])
    flip(first, offsets[50] + 30)
    durable = DurableStore(tmp_path, "no", 0)
    store = MemoryStore(["dur-00"])
    durable.open(store, ["dur-00"], repair=True)
    assert store.heartbeat_counts("dur-00", [(0, 10**12)]) == [RECORDS - 1]
    durable.close()
    again = MemoryStore(["dur-00"])
    DurableStore(tmp_path, "no", 0).open(again, ["dur-00"])  # no --repair needed
    assert again.heartbeat_counts("dur-00", [(0, 10**12)]) == [RECORDS - 1]
