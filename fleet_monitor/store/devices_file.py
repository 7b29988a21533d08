"""Loading the fleet from a CSV file: header ``device_id`` (then, optionally, profile columns:
``expected_every``, ``grace`` and labels), one device a line."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path
from typing import NamedTuple

from fleet_monitor.domain.devices import DEVICE_ID_RULE, device_id_problem
from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.profiles import EMPTY, LABEL_KEY, Profile, file_profile

log = logging.getLogger(__name__)

HEADER = "device_id"


class DevicesFileError(Exception):
    """The devices file is missing or malformed; str() names the file and line."""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DevicesFileError(f"{path}: devices file not found") from None
    except UnicodeDecodeError:
        raise DevicesFileError(f"{path}: devices file is not UTF-8 text") from None
    except OSError as error:
        raise DevicesFileError(f"{path}: cannot read devices file: {error.strerror}") from None


def _rows(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for each non-blank line, spaces around each cell removed."""
    if '"' not in text and "," not in text:
        # Without quotes or commas every line is one field, as the csv module would read it;
        # splitting is 4x faster (100 000 ids: 0.32 -> 0.08 s of start-up).
        for line_number, line in enumerate(text.splitlines(), 1):
            value = line.strip()
            if value:
                yield line_number, [value]
        return
    rows = csv.reader(text.splitlines())
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as error:
            raise DevicesFileError(f"{path}:{rows.line_num}: not valid CSV: {error}") from None
        values = [value.strip() for value in row]
        if any(values):
            yield rows.line_num, values


class DevicesFile(NamedTuple):
    """A devices file's ids in file order, and the profiles its other columns give (a row
    whose cells are all empty gives none: it is not in ``profiles``)."""

    ids: list[str]
    profiles: dict[str, Profile]


def load_devices(path: Path) -> DevicesFile:
    """Read ``path``: the header ``device_id`` then, optionally, ``expected_every``, ``grace``
    and label columns (any other name: a label key); one device a line.

    Blank lines and spaces around a value are ignored, and so are empty cells; a repeated id
    is logged once and kept once (its first line counts). Raises :class:`DevicesFileError`
    naming the file (and line) when the file cannot be read, lacks the ``device_id`` header,
    has a column that is not a label key, or a line that is not a valid device and profile.
    """
    rows = _rows(path, _read_text(path))
    header = next(rows, None)
    if header is None:
        raise DevicesFileError(f"{path}: empty devices file, expected the header {HEADER!r}")
    line, columns = header
    if columns[0] != HEADER:
        raise DevicesFileError(
            f"{path}:{line}: expected the header {HEADER!r}, found {columns[0]!r}"
        )
    for column in columns[1:]:
        if not LABEL_KEY.fullmatch(column) or columns.count(column) > 1:
            raise DevicesFileError(
                f"{path}:{line}: column {column!r} is not a label key (1 to 63 characters of "
                "a-z 0-9 _ . -, starting with a letter), or is repeated"
            )
    first_line: dict[str, int] = {}
    profiles: dict[str, Profile] = {}
    reported: set[str] = set()
    for line_number, cells in rows:
        if len(cells) != len(columns):
            expected = "one column" if len(columns) == 1 else f"{len(columns)} columns"
            raise DevicesFileError(f"{path}:{line_number}: expected {expected}, found {len(cells)}")
        device_id = cells[0]
        if (problem := device_id_problem(device_id)) is not None:
            rule = DEVICE_ID_RULE if problem.startswith("must") else problem
            raise DevicesFileError(f"{path}:{line_number}: invalid device id {device_id!r}: {rule}")
        if device_id in first_line:
            if device_id not in reported:
                reported.add(device_id)
                log.warning(
                    "%s:%d: duplicate device id %r (first on line %d), kept once",
                    path,
                    line_number,
                    device_id,
                    first_line[device_id],
                )
            continue
        first_line[device_id] = line_number
        if len(columns) > 1:
            pairs = zip(columns[1:], cells[1:], strict=True)
            row = {column: cell for column, cell in pairs if cell}
            try:
                profile = file_profile(f"{path}:{line_number}", row)
            except InvalidInputError as error:
                raise DevicesFileError(str(error)) from None
            if profile != EMPTY:
                profiles[device_id] = profile
    return DevicesFile(list(first_line), profiles)


def load_device_ids(path: Path) -> list[str]:
    """The device ids of ``path`` (see :func:`load_devices`)."""
    return load_devices(path).ids


DEFAULT_DEVICES = Path("devices.csv")
SAMPLE_DEVICES = "sample-devices.csv"  # package data of fleet_monitor.store


def fleet_devices(path: Path | None) -> tuple[DevicesFile, str]:
    """The fleet's devices file and where it came from: ``path``, else ``./devices.csv``,
    else the sample fleet bundled with the package (the assignment's five devices, with a
    warning). Raises :class:`DevicesFileError` as :func:`load_devices` does."""
    if path is not None or DEFAULT_DEVICES.exists():
        path = path or DEFAULT_DEVICES
        return load_devices(path), str(path)
    with as_file(files("fleet_monitor.store").joinpath(SAMPLE_DEVICES)) as sample:
        log.warning(
            "no --devices and no ./devices.csv: using the bundled sample fleet "
            "(pass --devices FILE for yours)"
        )
        return load_devices(sample), "the bundled sample fleet"


def fleet_device_ids(path: Path | None) -> tuple[list[str], str]:
    """The fleet's device ids and where they came from (see :func:`fleet_devices`)."""
    found, source = fleet_devices(path)
    return found.ids, source
