"""The table of ``benchmarks/results.md``: rows by number, in one order; a run of only some rows
(``benchmarks.run --only``) replaces those rows and keeps the others, with a line saying when
and how they were measured. The soak's section after the table is kept by the caller."""

from __future__ import annotations

from benchmarks.soak_page import BEGIN

TITLE = "# Benchmark results"
TABLE_HEAD = "| # | what | reference | figure | ratio / target |\n|---|---|---|---|---|"
ORDER = (
    "1",
    "2",
    "3",
    "3b",
    "4",
    "6",
    "5",
    "7",
    "\N{EN DASH}",
    "8a",
    "8b",
    "8c",
    "8d",
    "8e",
    "8f",
    "9a",
    "9b",
    "10",
    "11",
)
NOTE = "Rows "  # how a paragraph about a run of some rows begins

Row = tuple[str, str]  # (its number, its Markdown line)


def row(number: str, what: str, reference: str, figure: str, ratio: str) -> Row:
    """One line of the table."""
    return number, f"| {number} | {what} | {reference} | {figure} | {ratio} |"


def _table_part(page: str) -> str:
    return page.split(BEGIN, 1)[0]


def table_rows(page: str) -> dict[str, str]:
    """The rows of a page's table (not the soak's), by their number."""
    found: dict[str, str] = {}
    for line in _table_part(page).splitlines():
        if line.startswith("| ") and not line.startswith("| # |"):
            found[line.split("|")[1].strip()] = line
    return found


def paragraphs(page: str) -> list[str]:
    """The paragraphs between a page's title and its table."""
    lines = _table_part(page).splitlines()[1:]
    body = []
    for line in lines:
        if line.startswith("|"):
            break
        body.append(line)
    return [part.strip() for part in "\n".join(body).split("\n\n") if part.strip()]


def note_rows(paragraph: str) -> set[str]:
    """The rows a ``Rows 8a, 8b measured …`` paragraph is about (none for another one)."""
    if not paragraph.startswith(NOTE) or " measured " not in paragraph:
        return set()
    return set(paragraph[len(NOTE) :].split(" measured ", 1)[0].split(", "))


def without_rows(paragraph: str, measured: set[str]) -> str:
    """``paragraph`` without the rows of ``measured`` if it is a ``Rows … measured`` one
    ("" when none of its rows is left); any other paragraph as it is."""
    rows = note_rows(paragraph)
    if not rows & measured:
        return paragraph
    listed, rest = paragraph[len(NOTE) :].split(" measured ", 1)
    left = [number for number in listed.split(", ") if number not in measured]
    return f"{NOTE}{', '.join(left)} measured {rest}" if left else ""


def compose(rows: list[Row], measured: str, previous: str | None) -> str:
    """The page (up to the soak's section). A whole run (``previous`` None) gives its rows and
    ``Measured {measured}.``; a run of some rows keeps the rows and paragraphs of the
    ``previous`` page, replaces the rows it measured, and says when they were measured
    (replacing what an earlier run of those rows said)."""
    produced = dict(rows)
    if previous is None:
        kept: dict[str, str] = {}
        text = [f"Measured {measured}."]
    else:
        kept = table_rows(previous)
        ids = [number for number in ORDER if number in produced] + [
            number for number in produced if number not in ORDER
        ]
        text = [
            kept_part
            for paragraph in paragraphs(previous)
            if (kept_part := without_rows(paragraph, set(ids)))
        ]
        text.append(f"{NOTE}{', '.join(ids)} measured {measured}.")
    merged = {**kept, **produced}
    order = [n for n in ORDER if n in merged] + [n for n in merged if n not in ORDER]
    lines = [merged[number] for number in order]
    return f"{TITLE}\n\n" + "\n\n".join(text) + f"\n\n{TABLE_HEAD}\n" + "\n".join(lines) + "\n"
