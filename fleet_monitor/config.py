"""One :class:`Settings` object, from command-line flags, ``FLEET_MONITOR_*`` env vars, defaults.

Each option is a field of :class:`Settings`; its metadata gives the help text and the parser
that both the flag and the env var go through, so a value means the same wherever it is set.
Precedence: flag, then environment, then the default. (Over 300 lines: one declarative
field per option, each with its help text; splitting them would scatter the one table.)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.profiles import LABEL_KEY, ExpectationRule, parse_selector

ENV_PREFIX = "FLEET_MONITOR_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; str() names the setting."""


def parse_port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    port = _parse_int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"must be a port from 0 to 65535, got {text!r}")
    return port


def parse_positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _parse_int(text)
    if value < 1:
        raise ValueError(f"must be a whole number of at least 1, got {text!r}")
    return value


def parse_seconds(text: str) -> int:
    """A whole number of seconds, 0 or more."""
    value = _parse_int(text)
    if value < 0:
        raise ValueError(f"must be a whole number of at least 0, got {text!r}")
    return value


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """A size in bytes of at least 1: ``1048576``, or with a binary unit ``64k``, ``16M``,
    ``4G``, ``1T`` (powers of 1024; a trailing ``B``/``iB`` is allowed)."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    if not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise ValueError(f"must be a size in bytes like 1048576, 64k, 16M or 4G, got {text!r}")
    return int(number) * _SIZE_UNITS[unit]


def parse_rate(text: str) -> float:
    """A rate such as ``5/s``, ``300/m`` or ``10`` (per second), as writes per second."""
    number, _, unit = text.strip().partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip().lower())
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if per is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive rate like 5/s, 300/m or 10, got {text!r}")
    return value / per


STORE_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


def parse_store(text: str) -> str:
    """``memory``, or the URL of a Valkey or Redis server: ``redis://[user:pass@]host:port/db``,
    ``rediss://…`` (TLS), ``unix:///path/to.sock``, or the same with ``valkey``/``valkeys``."""
    value = text.strip()
    if value == "memory":
        return value
    if value.split("://", 1)[0] in STORE_SCHEMES and "://" in value:
        # redis (0.2 s to import) only when a URL is given
        from fleet_monitor.store.valkey_engine import check_url  # noqa: PLC0415

        check_url(value)
        return value
    raise ValueError(
        f"must be memory or a URL like redis://host:6379/0 or unix:///run/valkey.sock, got {text!r}"
    )


def parse_label_key_option(text: str) -> str:
    """A label key (1 to 63 characters of a-z 0-9 _ . -, starting with a letter)."""
    value = text.strip()
    if not LABEL_KEY.fullmatch(value):
        raise ValueError(
            f"must be a label key: a-z 0-9 _ . -, starting with a letter; got {text!r}"
        )
    return value


def parse_expectation_rules(text: str) -> tuple[ExpectationRule, ...]:
    """``selector=every[/grace]`` rules separated by ``;`` (a selector: ``key:value`` pairs
    joined by ``&``)."""
    rules = []
    for part in (piece.strip() for piece in text.split(";")):
        if not part:
            continue
        selector_text, equals, times = part.partition("=")
        every_text, _, grace_text = times.partition("/")
        if not equals or not every_text.strip().isdigit() or int(every_text) < 1:
            raise ValueError(f"a rule is selector=expected_every[/grace] in seconds, got {part!r}")
        if grace_text and not grace_text.strip().isdigit():
            raise ValueError(f"a rule's grace must be whole seconds, got {part!r}")
        try:
            selector = parse_selector(selector_text.strip().split("&"))
        except InvalidInputError as error:
            raise ValueError(f"{part!r}: {error}") from None
        grace = int(grace_text) if grace_text else None
        rules.append(ExpectationRule(selector, int(every_text), grace))
    return tuple(rules)


def parse_public_status(text: str) -> tuple[tuple[str, str], ...]:
    """``all`` (every device: the empty selector) or ``key:value`` pairs joined by ``&``."""
    if text.strip() == "all":
        return ()
    try:
        return parse_selector(text.strip().split("&"))
    except InvalidInputError as error:
        raise ValueError(f"must be all or key:value pairs joined by &: {error}") from None


def parse_interval(text: str) -> float:
    """Seconds, 0.1 to 3600 (a fraction allowed)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise ValueError(f"must be seconds from 0.1 to 3600, got {text!r}")
    return value


def parse_switch(text: str) -> bool:
    """On or off: 1/true/yes/on or 0/false/no/off, in any case."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be one of 1, true, yes, on, 0, false, no, off, got {text!r}")


def _parse_int(text: str) -> int:
    value = text.strip()
    digits = value.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):  # no "1_000", no full-width digits
        raise ValueError(f"must be a whole number, got {text!r}")
    return int(value)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {text!r}")
        return value

    return parse


def _option(default: Any, parse: Callable[[str], Any], help: str, metavar: str) -> Any:
    return dataclasses.field(
        default=default, metadata={"parse": parse, "help": help, "metavar": metavar}
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with."""

    host: str = _option("127.0.0.1", str, "address to listen on", "ADDR")
    port: int = _option(6733, parse_port, "TCP port to listen on (0: any free port)", "PORT")
    devices: Path | None = _option(
        None,
        Path,
        "CSV file of the fleet's device ids (default: ./devices.csv, else the bundled sample "
        "fleet)",
        "CSV",
    )
    threads: int = _option(
        8,
        parse_positive_int,
        "worker threads serving requests; device writes have a lane of their own: 1 thread, "
        "or N when each write waits on a disk (--fsync always) or on --store",
        "N",
    )
    workers: int = _option(
        1,
        parse_positive_int,
        "processes serving the port, each with its threads (one per core); more than 1 needs "
        "a shared --store URL",
        "N",
    )
    log_level: str = _option(
        "info", _choice("debug", "info", "warning", "error"), "least severe level logged", "LEVEL"
    )
    log_format: str = _option(
        "auto",
        _choice("auto", "text", "json"),
        "log line format; auto: text on a terminal, JSON otherwise",
        "FORMAT",
    )
    offline_after: int = _option(
        120,
        parse_positive_int,
        "seconds after its latest heartbeat's sent_at that a device counts as offline",
        "SECONDS",
    )
    expected_every: int = _option(
        60,
        parse_positive_int,
        "seconds between heartbeats a device is expected to keep: past it, a device whose "
        "latest heartbeat arrived that long ago is late",
        "SECONDS",
    )
    grace: int = _option(
        60,
        parse_positive_int,
        "seconds a late device has before it is down",
        "SECONDS",
    )
    expect: tuple[ExpectationRule, ...] = _option(
        (),
        parse_expectation_rules,
        "expectations by label, for devices without their own: 'site:paris=300/60; "
        "kind:gate=600' (selector=expected_every[/grace] in seconds; the first match counts)",
        "RULES",
    )
    max_clock_skew: int = _option(
        60,
        parse_positive_int,
        "seconds a device's sent_at may differ from when its heartbeat arrived before its clock "
        "is reported as drifting",
        "SECONDS",
    )
    max_body_bytes: int = _option(
        64 * 1024, parse_positive_int, "largest request body accepted, in bytes (else 413)", "N"
    )
    metrics_per_device: bool = _option(
        False,
        parse_switch,
        "also export each device's uptime and last heartbeat on /metrics (one series per device)",
        "",
    )
    alerts: Path | None = _option(
        None,
        Path,
        "a TOML file of alert channels and rules (see docs/alerts.md); read at start",
        "FILE",
    )
    alerts_every: float = _option(
        15.0, parse_interval, "seconds between two evaluations of the alert rules", "SECONDS"
    )
    metrics_group_by: str | None = _option(
        None,
        parse_label_key_option,
        "a label key: /metrics also counts devices by state for each of its values (the first "
        "100 values; the rest as _other)",
        "KEY",
    )
    store: str = _option(
        "memory",
        parse_store,
        "where the fleet's state lives: memory (this process; with --data-dir for durability) "
        "or a Valkey 8+/Redis 7+ URL shared by many processes (redis://, rediss://, unix://)",
        "URL",
    )
    data_dir: Path | None = _option(
        None,
        Path,
        "keep the state (journal and snapshots) in this directory; without it, memory only",
        "DIR",
    )
    fsync: str = _option(
        "everysec",
        _choice("always", "everysec", "no"),
        "when the journal is fsynced: before each reply, at most a second later, or by the OS",
        "MODE",
    )
    snapshot_every: int = _option(
        300,
        parse_seconds,
        "seconds between snapshots of the state (0: only at shutdown)",
        "SECONDS",
    )
    repair: bool = _option(
        False,
        parse_switch,
        "at start, skip damaged journal records (each skipped range is logged) and replace a "
        "damaged snapshot by the previous one, instead of refusing to start",
        "",
    )
    max_batch: int = _option(
        1000, parse_positive_int, "most events in one POST /api/v1/events (else 413)", "N"
    )
    read_token: str | None = _option(
        None,
        str,
        "when set, GETs under /api/v1 (but the OpenAPI document) need Authorization: Bearer <it>",
        "TOKEN",
    )
    public_status: tuple[tuple[str, str], ...] | None = _option(
        None,
        parse_public_status,
        "with --read-token set, the status pages show the devices with these labels "
        "('site:paris&kind:gate', or 'all') to anyone, without the token",
        "SELECTOR",
    )
    device_token: str | None = _option(
        None, str, "when set, device POSTs and batches need it as a bearer token", "TOKEN"
    )
    admin_token: str | None = _option(
        None, str, "when set, registering and removing devices need it as a bearer token", "TOKEN"
    )
    rate_limit: float | None = _option(
        None,
        parse_rate,
        "writes per device a second (5/s, 300/m, 10); over it: 429 with Retry-After",
        "RATE",
    )
    burst: int = _option(
        10, parse_positive_int, "requests a device or client may save up (rate limits)", "N"
    )
    read_rate_limit: float | None = _option(
        None,
        parse_rate,
        "GETs under /api/v1 (but the OpenAPI document) per client (an IPv4 address or an IPv6 "
        "/64) a second; over it: 429 with Retry-After",
        "RATE",
    )
    read_budget: int = _option(
        10_000,
        parse_positive_int,
        "window steps all windowed reads may compute at once; over it: 429 with Retry-After",
        "STEPS",
    )
    max_devices: int = _option(
        1_000_000, parse_positive_int, "most devices in the fleet; a PUT past it: 422", "N"
    )
    max_device_bytes: int = _option(
        16 * 1024**2,
        parse_size,
        "estimated memory one device's history (heartbeat bitmap, uploads) may hold; a write "
        "past it: 422",
        "SIZE",
    )
    max_fleet_bytes: int = _option(
        4 * 1024**3,
        parse_size,
        "estimated memory the whole fleet's history may hold; a write past it: 422",
        "SIZE",
    )
    max_sent_at_age: int = _option(
        0,
        parse_seconds,
        "refuse (422) a sent_at more than this many seconds before the server's clock "
        "(0: any; the assignment's simulator sends year 1 in its stats)",
        "SECONDS",
    )
    max_sent_at_lead: int = _option(
        0,
        parse_seconds,
        "refuse (422) a sent_at more than this many seconds after the server's clock (0: any)",
        "SECONDS",
    )
    channel_timeout: int = _option(
        120, parse_positive_int, "seconds an idle connection stays open (waitress)", "SECONDS"
    )
    connection_limit: int = _option(
        1000, parse_positive_int, "most open connections (waitress)", "N"
    )
    connections_per_client: int = _option(
        64,
        parse_positive_int,
        "most open connections from one client address (an IPv6 /64); behind a reverse proxy, "
        "raise it to --connection-limit",
        "N",
    )
    header_timeout: int = _option(
        5,
        parse_positive_int,
        "seconds a client has to send a request's headers, from connecting or from the "
        "request's first byte (else 408)",
        "SECONDS",
    )
    request_timeout: int = _option(
        30,
        parse_positive_int,
        "seconds a request's body may take to arrive after its headers (else 408), and its "
        "answer to be read by the client (else the connection is closed)",
        "SECONDS",
    )
    shutdown_grace: int = _option(
        0,
        parse_seconds,
        "seconds to keep serving after SIGTERM with /readyz answering 503, so load balancers "
        "stop sending before the port closes",
        "SECONDS",
    )

    @property
    def log_level_number(self) -> int:
        """The ``logging`` level number of :attr:`log_level`."""
        return logging.getLevelNamesMapping()[self.log_level.upper()]


def _flag(field: dataclasses.Field[Any]) -> str:
    return "--" + field.name.replace("_", "-")


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser``; each documents its env var and default."""
    for field in dataclasses.fields(Settings):
        parse = field.metadata["parse"]
        kind: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}  # --name / --no-name, no value
            if parse is parse_switch
            else {"type": _argparse_type(parse), "metavar": field.metadata["metavar"]}
        )
        parser.add_argument(
            _flag(field),
            dest=field.name,
            default=None,
            help=f"{field.metadata['help']} (env {env_name(field.name)}; default: {field.default})",
            **kind,
        )


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Build :class:`Settings`: flags first, then ``FLEET_MONITOR_*`` variables, then defaults.

    Raises :class:`ConfigError` naming the variable when an environment value is invalid.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        flag_value = getattr(args, field.name, None)
        if flag_value is not None:
            values[field.name] = flag_value
            continue
        name = env_name(field.name)
        if name in environ:
            try:
                values[field.name] = field.metadata["parse"](environ[name])
            except ValueError as error:
                raise ConfigError(f"{name} {error}") from None
    return Settings(**values)
