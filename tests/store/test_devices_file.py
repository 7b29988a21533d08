"""Loading devices.csv: the good file, tolerated noise, and each way it can be wrong."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fleet_monitor.domain.profiles import Profile
from fleet_monitor.store.devices_file import DevicesFileError, load_device_ids, load_devices
from tests.conftest import REPO, SAMPLE_DEVICES


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "devices.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_bundled_sample_fleet() -> None:
    assert load_device_ids(REPO / "devices.csv") == list(SAMPLE_DEVICES)


def test_blank_lines_spaces_crlf_and_bom_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff\r\n device_id \r\n\r\n  a-1  \r\n\r\nb.2\r\n   \r\n")
    assert load_device_ids(path) == ["a-1", "b.2"]


def test_header_only_is_an_empty_fleet(tmp_path: Path) -> None:
    assert load_device_ids(write(tmp_path, "device_id\n")) == []


def test_duplicates_kept_once_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "device_id\na\nb\na\na\n")
    with caplog.at_level(logging.WARNING):
        assert load_device_ids(path) == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"{path}:4: duplicate device id 'a' (first on line 2), kept once"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "{path}: empty devices file, expected the header 'device_id'"),
        ("\n\n", "{path}: empty devices file, expected the header 'device_id'"),
        ("id\na\n", "{path}:1: expected the header 'device_id', found 'id'"),
        ("a-1\nb-2\n", "{path}:1: expected the header 'device_id', found 'a-1'"),
        ("device_id\na,b\n", "{path}:2: expected one column, found 2"),
        ("device_id,Name\n", "{path}:1: column 'Name' is not a label key"),
        ("device_id,site,site\n", "{path}:1: column 'site' is not a label key"),
        ("device_id,site\na\n", "{path}:2: expected 2 columns, found 1"),
        ("device_id,grace\na,soon\n", "{path}:2: grace must be whole seconds"),
        ("device_id,expected_every\na,0\n", "{path}:2: expected_every must be null or a"),
        ("device_id,site\na,x\x01y\n", "{path}:2: label 'site': a value is a string"),
        ("device_id\n\nbad id\n", "{path}:3: invalid device id 'bad id': 1 to 128 characters"),
        ("device_id\na/b\n", "{path}:2: invalid device id 'a/b'"),
        (
            "device_id\na\n..\n",
            "{path}:3: invalid device id '..': cannot be . or .. (clients normalise such "
            "path segments away)",
        ),
        (b"device_id\n\xff\xfe\n", "{path}: devices file is not UTF-8 text"),
    ],
)
def test_malformed(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(DevicesFileError) as raised:
        load_device_ids(path)
    assert str(raised.value).startswith(message.format(path=path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DevicesFileError, match=r"nope\.csv: devices file not found"):
        load_device_ids(tmp_path / "nope.csv")


def test_a_directory_is_not_a_devices_file(tmp_path: Path) -> None:
    with pytest.raises(DevicesFileError, match="cannot read devices file"):
        load_device_ids(tmp_path)


@pytest.mark.parametrize(
    ("plain", "quoted"),
    [
        ("device_id\n a \n\n b\r\nc\n", '"device_id"\n"a"\n\n"b"\r\n"c"\n'),
        ("device_id\n\nb\nb\n", '"device_id"\n\n"b"\nb\n'),
    ],
)
def test_the_fast_path_reads_as_the_csv_module_does(
    tmp_path: Path, plain: str, quoted: str
) -> None:
    """A file without quotes or commas is split by lines; with them, read by the csv module."""
    (tmp_path / "plain.csv").write_text(plain)
    (tmp_path / "quoted.csv").write_text(quoted)
    assert load_device_ids(tmp_path / "plain.csv") == load_device_ids(tmp_path / "quoted.csv")


def test_the_fast_path_names_the_same_line_as_the_csv_module(tmp_path: Path) -> None:
    (tmp_path / "plain.csv").write_text("device_id\na\n\nnot ok\n")
    (tmp_path / "quoted.csv").write_text('device_id\n"a"\n\n"not ok"\n')
    for name in ("plain.csv", "quoted.csv"):
        with pytest.raises(DevicesFileError, match=rf"{name}:4: invalid device id 'not ok'"):
            load_device_ids(tmp_path / name)


def test_the_bundled_sample_is_the_repositorys_devices_csv() -> None:
    bundled = REPO / "fleet_monitor" / "store" / "sample-devices.csv"
    assert bundled.read_bytes() == (REPO / "devices.csv").read_bytes()


def test_profile_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "device_id,site,expected_every,grace,rack\na,paris,300,,r1\nb,,,0,\nc,lyon,,,\nd,,,,\n",
    )
    found = load_devices(path)
    assert found.ids == ["a", "b", "c", "d"]
    assert found.profiles == {
        "a": Profile((("rack", "r1"), ("site", "paris")), 300, None, from_file=True),
        "b": Profile((), None, 0, from_file=True),
        "c": Profile((("site", "lyon"),), None, None, from_file=True),
    }
    assert load_devices(write(tmp_path, "device_id\na\n")).profiles == {}
