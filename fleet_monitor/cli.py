"""The ``fleet-monitor`` command line: ``serve``, ``simulate``, ``migrate`` and ``alerts``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fleet_monitor import __version__
from fleet_monitor.config import ConfigError, add_arguments, parse_store, settings_from
from fleet_monitor.logs import FLUSH_SECONDS, configure_logging, flush_lines
from fleet_monitor.simulator.scenarios import DEFAULT_START
from fleet_monitor.store.devices_file import DevicesFileError

USAGE_ERROR = 2


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text!r}")
    return value


def _positive(kind: type[int] | type[float]) -> argparse._ActionType:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        return value

    return parse


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser(
        "simulate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="replay a fleet against a server and compare expected with actual stats",
        description="Send a fleet's heartbeats and upload stats to any server that speaks the "
        "device API, then GET each device's stats and compare them with the expected values. "
        "Exit 0 when every device matches, 1 on any mismatch, 2 on a usage error or an "
        "unreachable server.",
    )
    add = sim.add_argument
    add("--url", default="http://127.0.0.1:6733", help="server base URL")
    add(
        "--devices",
        type=Path,
        help="CSV of device ids (default: ./devices.csv, else the bundled sample fleet)",
    )
    add(
        "--profile",
        choices=("generated", "assignment"),
        default="generated",
        help="generated: from the options below; assignment: exactly the closed simulator's "
        "traffic (five sample devices, one worker each)",
    )
    add("--scenario", type=Path, help="replay this JSON Lines scenario instead of generating")
    add("--save-scenario", type=Path, help="write the scenario used as JSON Lines")
    add("--minutes", type=_positive(int), default=480, help="span of heartbeats, in minutes")
    add("--uploads", type=int, default=100, help="upload records per device")
    add("--missing-rate", type=_fraction, default=0.02, help="share of minutes without heartbeat")
    add("--duplicate-rate", type=_fraction, default=0.02, help="share of heartbeats sent twice")
    add("--out-of-order", type=_fraction, default=0.05, help="share of events sent out of order")
    add("--seed", type=int, default=1, help="random seed (same seed, same scenario)")
    add("--start", default=DEFAULT_START, help="first minute of the scenario (RFC 3339)")
    add("--concurrency", type=_positive(int), default=8, help="requests in flight")
    add("--rate", type=_positive(float), help="at most this many requests a second, all workers")
    add("--burst", type=_positive(int), default=10, help="token bucket size for --rate")
    add("--timeout", type=_positive(float), default=10.0, help="seconds per request attempt")
    add("--retries", type=int, default=5, help="retries on connection errors, 429 and 5xx")
    add("--report", type=Path, help="also write the text report here")
    add("--report-json", type=Path, help="write the report as JSON here")


def _engine_url(text: str) -> str:
    """A ``--store`` URL (as ``serve`` takes it), but not ``memory``."""
    try:
        value = parse_store(text)
    except ValueError:
        value = "memory"
    if value == "memory":
        raise argparse.ArgumentTypeError(
            "must be the URL of a Valkey or Redis server, like redis://host:6379/0 or "
            f"unix:///run/valkey.sock, got {text!r}"
        )
    return value


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="copy a memory store's --data-dir into a Valkey or Redis server, then check it",
        description="Copy the state of fleet-monitor serve --data-dir DIR (its snapshot and "
        "journal, read only: nothing in DIR is written) into the Valkey store at URL, each "
        "device replacing what the engine held of it (running it again changes nothing), "
        "then read every device back and compare. Exit 0 when every device matches, 1 on any "
        "difference, 2 when DIR or URL cannot be used.",
    )
    add = migrate.add_argument
    add("--from", dest="source", type=Path, required=True, metavar="DIR", help="the data dir")
    add(
        "--to",
        dest="target",
        type=_engine_url,
        required=True,
        metavar="URL",
        help="the engine: redis://[user:pass@]host:port/db, rediss://, unix:///path, valkey://",
    )
    add(
        "--devices",
        type=Path,
        help="the CSV serve was given (default: ./devices.csv, else the bundled sample fleet): "
        "its devices are added as serve adds them",
    )


def _add_alerts(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = commands.add_parser(
        "alerts",
        help="alert channels: send a sample alert",
        description="Work with alert channels. Exit 0 when the alert was delivered, 1 when the "
        "channel did not take it, 2 on a usage error.",
    )
    actions = alerts.add_subparsers(dest="action", metavar="ACTION", required=True)
    test = actions.add_parser(
        "test",
        help="send a sample alert to a channel",
        description="Send a sample alert (event test) to URL: signed+https://host/path for the "
        "signed webhook, or any Apprise URL (json://, slack://, mailto://, ntfy://, ...).",
    )
    test.add_argument("--channel", required=True, metavar="URL", help="the channel's URL")
    test.add_argument(
        "--secret",
        default=os.environ.get("FLEET_MONITOR_ALERT_SECRET"),
        help="the signed webhook's secret (default: FLEET_MONITOR_ALERT_SECRET)",
    )
    test.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds to wait")


def _alerts(args: argparse.Namespace) -> int:
    """Run ``fleet-monitor alerts test``: one line saying what happened."""
    from fleet_monitor.alerts.channels import (
        ChannelError,
        DeliveryError,
        channel,
        redacted,
        sample_alert,
    )

    try:
        target = channel("test", args.channel, args.secret)
    except ChannelError as error:
        return _fail(str(error))
    try:
        target.send(sample_alert(), args.timeout)
    except DeliveryError as error:
        print(f"fleet-monitor: not delivered: {error}", file=sys.stderr)
        return 1
    print(f"sent a test alert to {redacted(args.channel)}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    # Imported here: ``serve`` starts faster without the HTTP client (-0.15 s).
    from fleet_monitor.simulator.run import UsageError, run

    try:
        return run(args)
    except UsageError as error:
        return _fail(str(error))


def _migrate(args: argparse.Namespace) -> int:
    """Run ``fleet-monitor migrate``: one line a count, then the check's verdict."""
    from fleet_monitor.store.devices_file import fleet_device_ids
    from fleet_monitor.store.migrate import MigrationError, migrate
    from fleet_monitor.store.valkey_engine import safe_url

    configure_logging(logging.WARNING, "text")  # the devices file's warnings, on stderr
    try:
        device_ids, _ = fleet_device_ids(args.devices)
        report = migrate(args.source, args.target, device_ids)
    except (DevicesFileError, MigrationError) as error:
        return _fail(str(error))
    for note in report.notes:
        print(f"note: {note}")
    print(f"copied {args.source} into {safe_url(args.target)}")
    print(f"journal records replayed: {report.replayed}")
    print(f"devices: {report.devices}")
    print(f"removed ids: {report.removed}")
    print(f"heartbeat minutes: {report.minutes}")
    print(f"uploads: {report.uploads}")
    print(f"idempotency keys: {report.keys}")
    print(f"maintenance windows: {report.windows}")
    print(f"history bytes: {report.history_bytes}")
    for line in report.differences:
        print(f"differs: {line}")
    for device_id in report.not_removed:
        print(f"differs: {device_id}: removed in the dir, not in the engine")
    if report.matches:
        print(f"verified: {report.verified} devices match")
    else:
        print(f"verified: {report.verified} of {report.devices} devices match, the rest differ")
    return 0 if report.matches else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fleet-monitor",
        description="Fleet uptime and upload-time monitor for device heartbeats.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the fleet-monitor HTTP service under waitress. Every option can also "
        "be set by the environment variable named in its help; a flag wins over the variable.",
    )
    add_arguments(serve_parser)
    _add_simulate(commands)
    _add_migrate(commands)
    _add_alerts(commands)
    return parser


def _fail(message: str) -> int:
    flush_lines()  # what was logged before the failure comes before its message
    print(f"fleet-monitor: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    if args.command in ("simulate", "migrate", "alerts"):
        return {"simulate": _simulate, "migrate": _migrate, "alerts": _alerts}[args.command](args)
    try:
        settings = settings_from(args, os.environ)
    except ConfigError as error:
        parser.exit(USAGE_ERROR, f"fleet-monitor: error: {error}\n")
    configure_logging(settings.log_level_number, settings.log_format, flush_every=FLUSH_SECONDS)
    from fleet_monitor.service import serve
    from fleet_monitor.store.durable import StateError
    from fleet_monitor.store.journal import CorruptJournalError
    from fleet_monitor.store.snapshot import SnapshotError

    try:
        return serve(settings, list(sys.argv[1:] if argv is None else argv))
    except (ConfigError, DevicesFileError, CorruptJournalError, SnapshotError, StateError) as error:
        return _fail(str(error))  # ConfigError here: a setting this host cannot hold
    except OSError as error:  # e.g. the port is taken
        return _fail(f"cannot listen: {error}")
