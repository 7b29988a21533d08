"""The soak benchmark's own code path (never its figures): a one-second run, and its section
of the results page replacing only itself."""

from __future__ import annotations

from pathlib import Path

from benchmarks.soak import main
from benchmarks.soak_page import BEGIN, END, write_section

PAGE = "# Benchmark results\n\nMeasured 2026-11-23 on 2 cores.\n\n| 1 | ingest |\n"


def test_a_short_soak_loses_nothing_and_writes_its_section(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text(PAGE)
    args = ["--seconds", "1", "--threads", "2", "--fsync", "everysec", "--output", str(page)]
    assert main(args) == 0
    text = page.read_text()
    assert text.startswith(PAGE)  # the other benchmarks' content is kept
    [row] = [line for line in text.splitlines() if line.startswith("| `everysec` | 1 s |")]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert (cells[3], cells[4], cells[6]) == ("0", "0", "0")  # 5xx, unanswered, lost


def test_the_section_replaces_itself_and_nothing_else(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text(f"{PAGE}\n{BEGIN}\nold\n{END}\n\ntrailer\n")
    write_section(page, f"{BEGIN}\nnew\n{END}\n")
    assert page.read_text() == f"{PAGE}\n{BEGIN}\nnew\n{END}\n\ntrailer\n"
    missing = tmp_path / "other.md"
    missing.write_text(PAGE)
    write_section(missing, f"{BEGIN}\nnew\n{END}\n")
    assert missing.read_text() == f"{PAGE}\n{BEGIN}\nnew\n{END}\n"
