"""``fleet-monitor simulate`` from its parsed options: build the scenario, send it, judge it.

:func:`run` returns 0 when every device matches, :data:`MISMATCH` (1) on any mismatch, and
raises :class:`UsageError` for a bad option or input and for a server that cannot be reached
or stops answering (the command line prints it and exits 2).
"""

from __future__ import annotations

import argparse
import json
import time

import requests

from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.logs import configure_logging
from fleet_monitor.simulator.report import DeviceResult, fetch_actual, render_json, render_text
from fleet_monitor.simulator.scenarios import (
    ASSIGNMENT_FLEET,
    Event,
    Expected,
    GeneratorOptions,
    ScenarioError,
    assignment,
    expected_results,
    generate,
    load,
    save,
)
from fleet_monitor.simulator.sender import Sender, SendOptions, send_lanes, split_lanes
from fleet_monitor.store.devices_file import DevicesFileError, fleet_device_ids

MISMATCH = 1


class UsageError(Exception):
    """A bad option or input; str() is the one line to print."""


def scenario(args: argparse.Namespace) -> tuple[list[Event], dict[str, Expected]]:
    """The events to send and each device's expected stats; raises UsageError."""
    source = "the assignment's fleet"
    try:
        if args.profile == "assignment" and args.scenario is None:
            devices = list(ASSIGNMENT_FLEET)
            events = assignment(args.seed, args.start)
        else:
            devices, source = fleet_device_ids(args.devices)
            options = GeneratorOptions(
                args.minutes,
                args.uploads,
                args.missing_rate,
                args.duplicate_rate,
                args.out_of_order,
                args.seed,
                args.start,
            )
            events = load(args.scenario) if args.scenario else generate(devices, options)
        return events, expected_results(devices, events)
    except (DevicesFileError, ScenarioError) as error:
        raise UsageError(str(error)) from None
    except UnknownDeviceError as error:
        raise UsageError(
            f"the scenario names device {str(error)!r} that is not in {source}"
        ) from None
    except ValueError as error:
        raise UsageError(f"--start: {error}") from None


def check_reachable(url: str, device: str) -> None:
    """Raise UsageError when nothing answers at ``url``."""
    try:
        requests.get(f"{url}/api/v1/devices/{device}/stats", timeout=5)
    except requests.RequestException as error:
        raise UsageError(f"cannot reach {url}: {type(error).__name__}") from None


def send_and_judge(
    args: argparse.Namespace, url: str, events: list[Event], expected: dict[str, Expected]
) -> tuple[list[DeviceResult], Sender, float]:
    """Send every event (one lane per device with the assignment profile), then fetch each
    device's stats; return the results, the sender (with its totals) and the wall time."""
    sender = Sender(
        SendOptions(url, args.concurrency, args.rate, args.burst, args.timeout, args.retries)
    )
    by_device = args.profile == "assignment"
    lanes = split_lanes(events, args.concurrency, by_device)
    started = time.perf_counter()
    send_lanes(sender, lanes, len(lanes) if by_device else args.concurrency)
    results = [fetch_actual(sender, device, expected[device]) for device in expected]
    return results, sender, time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    """Run the simulator; return 0 or :data:`MISMATCH`; raises UsageError."""
    configure_logging(20, "text")
    url = args.url.rstrip("/")
    events, expected = scenario(args)
    if args.save_scenario:
        save(events, args.save_scenario)
    check_reachable(url, next(iter(expected), "x"))
    results, sender, wall = send_and_judge(args, url, events, expected)
    text = render_text(results, sender.totals, wall)
    print(text, end="")
    if args.report:
        args.report.write_text(text, encoding="utf-8")
    if args.report_json:
        report = render_json(results, sender.totals, wall)
        args.report_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if any(r.error == "no response" for r in results):
        raise UsageError(f"{url} stopped answering")
    return 0 if all(r.matches for r in results) else MISMATCH
