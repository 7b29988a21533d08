"""The ``fleet-monitor`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fleet_monitor import __version__
from fleet_monitor.config import ConfigError, add_arguments, settings_from
from fleet_monitor.devices_file import DevicesFileError
from fleet_monitor.logs import configure_logging
from fleet_monitor.server import serve

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="fleet-monitor",
        description="Fleet uptime and upload-time monitor for device heartbeats.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the fleet-monitor HTTP service under waitress. Every option can also "
        "be set by the environment variable named in its help; a flag wins over the variable.",
    )
    add_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        settings = settings_from(args, os.environ)
    except ConfigError as error:
        parser.exit(USAGE_ERROR, f"fleet-monitor: error: {error}\n")
    configure_logging(settings.log_level_number, settings.log_format)
    try:
        serve(settings)
    except DevicesFileError as error:
        print(f"fleet-monitor: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as error:  # e.g. the port is taken
        print(f"fleet-monitor: error: cannot listen: {error}", file=sys.stderr)
        return USAGE_ERROR
    return 0
