"""The devices file's profiles on every store: set where the API set none, replaced by a newer
file, never over a profile the API set."""

from __future__ import annotations

from pathlib import Path

import requests

from fleet_monitor.domain.profiles import Profile
from fleet_monitor.store.protocol import Store
from tests.conftest import SAMPLE_DEVICES, live_server

A, B, C = sorted(SAMPLE_DEVICES)[:3]
PARIS = Profile((("site", "paris"),), 300, None, from_file=True)
LYON = Profile((("site", "lyon"),), None, None, from_file=True)


def test_file_profiles_yield_to_the_api(store: Store) -> None:
    set_by_api = Profile((("site", "manual"),))
    store.set_profile(C, set_by_api)
    assert store.apply_file_profiles({A: PARIS, B: PARIS, C: PARIS, "unknown": PARIS}) == 2
    assert [store.snapshot(d).profile for d in (A, B, C)] == [PARIS, PARIS, set_by_api]
    assert store.apply_file_profiles({A: PARIS, B: PARIS}) == 0  # unchanged
    assert store.apply_file_profiles({A: LYON, B: PARIS}) == 1  # a newer file
    assert store.snapshot(A).profile == LYON


def test_a_file_without_a_device_s_row_or_columns_takes_its_file_profile_away(
    store: Store,
) -> None:
    set_by_api = Profile((("site", "manual"),), by_api=True)
    store.apply_file_profiles({A: PARIS, B: PARIS})
    store.set_profile(C, set_by_api)
    assert store.apply_file_profiles({A: LYON}) == 2  # B's row lost its cells
    assert [store.snapshot(d).profile for d in (A, B, C)] == [LYON, Profile(), set_by_api]
    assert store.apply_file_profiles({}) == 1  # the columns are gone
    assert [store.snapshot(d).profile for d in (A, B, C)] == [Profile(), Profile(), set_by_api]
    assert store.apply_file_profiles({B: PARIS}) == 1  # and back
    assert store.snapshot(B).profile == PARIS


def test_serve_reads_labels_from_the_devices_file(tmp_path: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text("device_id,site,expected_every\ncam-1,paris,300\ncam-2,,\n")
    with live_server(tmp_path, ["--devices", str(devices)]) as server:
        one = requests.get(f"{server.url}/api/v1/devices/cam-1", timeout=10).json()
        two = requests.get(f"{server.url}/api/v1/devices/cam-2", timeout=10).json()
    assert (one["labels"], one["expected_every"]) == ({"site": "paris"}, 300)
    assert (two["labels"], two["expected_every"]) == ({}, 60)
