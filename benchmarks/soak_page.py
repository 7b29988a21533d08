"""The soak's section of ``benchmarks/results.md``: its table, written between two markers so
the rest of the page (``benchmarks.run``'s) stays as it is."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"


def section(results: list[dict[str, object]], args: argparse.Namespace, batch: int) -> str:
    """The soak section of ``benchmarks/results.md``, between its markers."""
    command = (
        f".venv/bin/python -m benchmarks.soak --seconds {args.seconds:g} "
        f"--threads {args.threads} --fsync {args.fsync}"
    )
    machine = (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    )
    lines = [
        BEGIN,
        "## Soak: slow fsync, a snapshot every second, kill -9",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine}, with `{command}`: every fsync",
        f"sleeps 20 to 50 ms first (`tests/support/slow_fsync.py`); {args.threads} threads send "
        f"heartbeats, batches of {batch}, upload stats and reads; then kill -9 mid-load and a "
        "restart.",
        "",
        "| fsync | load | requests | 5xx (must be 0) | unanswered before the kill | acknowledged "
        "| lost after kill -9 (must be 0) | longest stall | snapshots |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['fsync']}` | {r['seconds']:g} s | {r['requests']} | {r['errors_5xx']} | "
        f"{r['unanswered']} | {r['acked_heartbeats']} heartbeats, {r['acked_uploads']} uploads "
        f"| {r['lost_acked_writes']} | {r['longest_stall_s']} s (p99 {r['p99_ms']} ms; "
        f"{_by_kind(r['longest_by_kind_s'])}) | {r['snapshots']} |"
        for r in results
    ]
    return "\n".join([*lines, END]) + "\n"


def _by_kind(longest: object) -> str:
    assert isinstance(longest, dict)
    return ", ".join(f"{kind} {seconds} s" for kind, seconds in longest.items())


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``text`` (with its markers ``begin`` and ``end``) in place of the page's section
    between them, or append it; keep the rest."""
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in page and end in page:
        head, rest = page.split(begin, 1)
        page = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        page = (page.rstrip("\n") + "\n\n" if page else "") + text
    path.write_text(page, encoding="utf-8")


def soak_section(path: Path) -> str:
    """The page's soak section with its markers, or "" when it has none."""
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN not in page or END not in page:
        return ""
    return BEGIN + page.split(BEGIN, 1)[1].split(END, 1)[0] + END
