"""Settings from flags, FLEET_MONITOR_* variables and defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fleet_monitor.cli import build_parser
from fleet_monitor.config import ConfigError, Settings, parse_size, settings_from
from fleet_monitor.domain.profiles import ExpectationRule
from fleet_monitor.http.wsgi_server import waitress_options


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(["serve", *argv]), environ or {})


def test_defaults() -> None:
    assert parse([]) == Settings(
        host="127.0.0.1",
        port=6733,
        devices=None,
        threads=8,
        log_level="info",
        log_format="auto",
        offline_after=120,
        max_body_bytes=65536,
        metrics_per_device=False,
        shutdown_grace=0,
    )


def test_every_setting_from_its_env_var() -> None:
    environ = {
        "FLEET_MONITOR_HOST": "0.0.0.0",
        "FLEET_MONITOR_PORT": "8080",
        "FLEET_MONITOR_DEVICES": "/etc/store.csv",
        "FLEET_MONITOR_THREADS": "2",
        "FLEET_MONITOR_LOG_LEVEL": "DEBUG",
        "FLEET_MONITOR_LOG_FORMAT": "json",
        "FLEET_MONITOR_MAX_BODY_BYTES": "1024",
        "FLEET_MONITOR_OFFLINE_AFTER": "300",
        "FLEET_MONITOR_METRICS_PER_DEVICE": "Yes",
        "FLEET_MONITOR_SHUTDOWN_GRACE": "5",
        "FLEET_MONITOR_DATA_DIR": "/var/lib/fleet",
        "FLEET_MONITOR_FSYNC": "always",
        "FLEET_MONITOR_SNAPSHOT_EVERY": "60",
        "FLEET_MONITOR_REPAIR": "true",
        "FLEET_MONITOR_MAX_BATCH": "50",
        "FLEET_MONITOR_READ_TOKEN": "r",
        "FLEET_MONITOR_DEVICE_TOKEN": "d",
        "FLEET_MONITOR_ADMIN_TOKEN": "a",
        "FLEET_MONITOR_RATE_LIMIT": "120/m",
        "FLEET_MONITOR_BURST": "3",
        "FLEET_MONITOR_CHANNEL_TIMEOUT": "30",
        "FLEET_MONITOR_CONNECTION_LIMIT": "50",
        "FLEET_MONITOR_READ_RATE_LIMIT": "10/s",
        "FLEET_MONITOR_READ_BUDGET": "5000",
        "FLEET_MONITOR_MAX_DEVICES": "100",
        "FLEET_MONITOR_MAX_DEVICE_BYTES": "64k",
        "FLEET_MONITOR_MAX_FLEET_BYTES": "2GiB",
        "FLEET_MONITOR_MAX_SENT_AT_AGE": "86400",
        "FLEET_MONITOR_MAX_SENT_AT_LEAD": "300",
        "FLEET_MONITOR_CONNECTIONS_PER_CLIENT": "10",
        "FLEET_MONITOR_HEADER_TIMEOUT": "3",
    }
    assert parse([], environ) == Settings(
        host="0.0.0.0",
        port=8080,
        devices=Path("/etc/store.csv"),
        threads=2,
        log_level="debug",
        log_format="json",
        offline_after=300,
        max_body_bytes=1024,
        metrics_per_device=True,
        shutdown_grace=5,
        data_dir=Path("/var/lib/fleet"),
        fsync="always",
        snapshot_every=60,
        repair=True,
        max_batch=50,
        read_token="r",
        device_token="d",
        admin_token="a",
        rate_limit=2.0,
        burst=3,
        channel_timeout=30,
        connection_limit=50,
        read_rate_limit=10.0,
        read_budget=5000,
        max_devices=100,
        max_device_bytes=65536,
        max_fleet_bytes=2 * 1024**3,
        max_sent_at_age=86400,
        max_sent_at_lead=300,
        connections_per_client=10,
        header_timeout=3,
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1", 1),
        ("1048576", 1048576),
        ("64k", 65536),
        ("16M", 16 * 1024**2),
        ("4g", 4 * 1024**3),
        ("2GiB", 2 * 1024**3),
        ("1T", 1024**4),
        ("512B", 512),
        (" 8kb ", 8192),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "0", "k", "1.5M", "-1", "1_000", "\uff11\uff10", "10X", "M16"]
)
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="must be a size in bytes like 1048576, 64k, 16M or 4G"):
        parse_size(text)


def test_flag_beats_env() -> None:
    settings = parse(["--port", "7000"], {"FLEET_MONITOR_PORT": "8000"})
    assert settings.port == 7000


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--metrics-per-device"], {}, True),
        (["--no-metrics-per-device"], {"FLEET_MONITOR_METRICS_PER_DEVICE": "on"}, False),
        ([], {"FLEET_MONITOR_METRICS_PER_DEVICE": "0"}, False),
        ([], {"FLEET_MONITOR_METRICS_PER_DEVICE": "TRUE"}, True),
    ],
)
def test_switch_from_flag_or_env(argv: list[str], environ: dict[str, str], expected: bool) -> None:
    assert parse(argv, environ).metrics_per_device is expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FLEET_MONITOR_PORT", "http", "FLEET_MONITOR_PORT must be a whole number, got 'http'"),
        ("FLEET_MONITOR_PORT", "\uff16\uff17", "FLEET_MONITOR_PORT must be a whole number"),
        ("FLEET_MONITOR_THREADS", "1_0", "FLEET_MONITOR_THREADS must be a whole number, got '1_0'"),
        ("FLEET_MONITOR_MAX_FLEET_BYTES", "lots", "FLEET_MONITOR_MAX_FLEET_BYTES must be a size"),
        ("FLEET_MONITOR_PORT", "70000", "FLEET_MONITOR_PORT must be a port from 0 to 65535"),
        (
            "FLEET_MONITOR_THREADS",
            "0",
            "FLEET_MONITOR_THREADS must be a whole number of at least 1",
        ),
        ("FLEET_MONITOR_LOG_LEVEL", "loud", "FLEET_MONITOR_LOG_LEVEL must be one of debug, info"),
        ("FLEET_MONITOR_LOG_FORMAT", "xml", "FLEET_MONITOR_LOG_FORMAT must be one of auto, text"),
        (
            "FLEET_MONITOR_METRICS_PER_DEVICE",
            "maybe",
            "FLEET_MONITOR_METRICS_PER_DEVICE must be one of 1, true, yes, on, 0, false, no, off",
        ),
        ("FLEET_MONITOR_FSYNC", "sometimes", "FLEET_MONITOR_FSYNC must be one of always, everysec"),
        ("FLEET_MONITOR_RATE_LIMIT", "fast", "FLEET_MONITOR_RATE_LIMIT must be a positive rate"),
        (
            "FLEET_MONITOR_CONNECTIONS_PER_CLIENT",
            "0",
            "FLEET_MONITOR_CONNECTIONS_PER_CLIENT must be a whole number of at least 1",
        ),
        (
            "FLEET_MONITOR_HEADER_TIMEOUT",
            "0",
            "FLEET_MONITOR_HEADER_TIMEOUT must be a whole number of at least 1",
        ),
        (
            "FLEET_MONITOR_SHUTDOWN_GRACE",
            "-1",
            "FLEET_MONITOR_SHUTDOWN_GRACE must be a whole number of at least 0, got '-1'",
        ),
    ],
)
def test_bad_env_value_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse([], {name: value})
    assert str(raised.value).startswith(message)


def test_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parse(["--port", "-1"])
    assert raised.value.code == 2
    assert "argument --port: must be a port from 0 to 65535, got '-1'" in capsys.readouterr().err


def test_help_documents_every_option_and_its_env_var() -> None:
    serve = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ).choices["serve"]
    text = serve.format_help()
    for flag, env in [
        ("--host", "FLEET_MONITOR_HOST"),
        ("--port", "FLEET_MONITOR_PORT"),
        ("--devices", "FLEET_MONITOR_DEVICES"),
        ("--threads", "FLEET_MONITOR_THREADS"),
        ("--log-level", "FLEET_MONITOR_LOG_LEVEL"),
        ("--log-format", "FLEET_MONITOR_LOG_FORMAT"),
        ("--max-body-bytes", "FLEET_MONITOR_MAX_BODY_BYTES"),
        ("--offline-after", "FLEET_MONITOR_OFFLINE_AFTER"),
        ("--metrics-per-device", "FLEET_MONITOR_METRICS_PER_DEVICE"),
        ("--shutdown-grace", "FLEET_MONITOR_SHUTDOWN_GRACE"),
        ("--data-dir", "FLEET_MONITOR_DATA_DIR"),
        ("--fsync", "FLEET_MONITOR_FSYNC"),
        ("--snapshot-every", "FLEET_MONITOR_SNAPSHOT_EVERY"),
        ("--repair", "FLEET_MONITOR_REPAIR"),
        ("--max-batch", "FLEET_MONITOR_MAX_BATCH"),
        ("--read-token", "FLEET_MONITOR_READ_TOKEN"),
        ("--device-token", "FLEET_MONITOR_DEVICE_TOKEN"),
        ("--admin-token", "FLEET_MONITOR_ADMIN_TOKEN"),
        ("--rate-limit", "FLEET_MONITOR_RATE_LIMIT"),
        ("--burst", "FLEET_MONITOR_BURST"),
        ("--channel-timeout", "FLEET_MONITOR_CHANNEL_TIMEOUT"),
        ("--connection-limit", "FLEET_MONITOR_CONNECTION_LIMIT"),
        ("--read-rate-limit", "FLEET_MONITOR_READ_RATE_LIMIT"),
        ("--read-budget", "FLEET_MONITOR_READ_BUDGET"),
        ("--max-devices", "FLEET_MONITOR_MAX_DEVICES"),
        ("--max-device-bytes", "FLEET_MONITOR_MAX_DEVICE_BYTES"),
        ("--max-fleet-bytes", "FLEET_MONITOR_MAX_FLEET_BYTES"),
        ("--max-sent-at-age", "FLEET_MONITOR_MAX_SENT_AT_AGE"),
        ("--max-sent-at-lead", "FLEET_MONITOR_MAX_SENT_AT_LEAD"),
        ("--connections-per-client", "FLEET_MONITOR_CONNECTIONS_PER_CLIENT"),
        ("--header-timeout", "FLEET_MONITOR_HEADER_TIMEOUT"),
    ]:
        assert flag in text
        assert env in " ".join(text.split())


def test_waitress_gets_the_limits() -> None:
    settings = Settings(channel_timeout=30, connection_limit=500, max_batch=1000, threads=3)
    options = waitress_options(settings)
    assert options["channel_timeout"] == 30
    assert options["threads"] == 3
    assert options["max_request_body_size"] == 1000 * 512 + 1024 * 1024  # a full batch fits
    assert options["asyncore_use_poll"] is True  # select() cannot watch descriptors > 1023
    assert options["cleanup_interval"] == 1  # the header deadline is checked every second
    # ours, the 32 spare slots, two 1 % batches of evictions still closing, listeners and pipes
    assert options["connection_limit"] == 500 + 32 + 2 * 5 + 8


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/0", "must be memory or a URL like redis://host:6379/0"),
        ("redis://h:abc/0", "redis://h:abc/0: Port could not be cast to integer value as 'abc'"),
        ("redis://u:secret@h:99999/0", "redis://u:***@h:99999/0: Port out of range 0-65535"),
        ("unix://", "unix:// names no socket path, like unix:///run/valkey.sock"),
        ("redis://h:6379/x", "redis://h:6379/x: the database must be a number from 0, as in /0"),
        ("redis://h/-1", "redis://h/-1: the database must be a number from 0, as in /0"),
        ("redis://[::1", "redis://[::1: Invalid IPv6 URL"),
        (
            "rediss://h:6380/0?ssl_cert_reqs=bogus",
            "rediss://h:6380/0?ssl_cert_reqs=bogus: Invalid SSL Certificate Requirements Flag",
        ),
    ],
)
def test_a_store_url_the_client_cannot_use_is_refused_at_start(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse([], {"FLEET_MONITOR_STORE": url})
    assert str(raised.value).startswith(f"FLEET_MONITOR_STORE {message}")


@pytest.mark.parametrize(
    "url",
    ["memory", "redis://h:6379/0", "valkey://:pw@h/3", "unix:///run/v.sock", "unix:///s?db=2"],
)
def test_store_urls_the_client_can_use(url: str) -> None:
    assert parse([], {"FLEET_MONITOR_STORE": url}).store == url


def test_expectation_rules() -> None:
    rules = parse([], {"FLEET_MONITOR_EXPECT": "site:paris=300/60; kind:gate&site:lyon=600;"})
    assert rules.expect == (
        ExpectationRule((("site", "paris"),), 300, 60),
        ExpectationRule((("kind", "gate"), ("site", "lyon")), 600, None),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site:paris", "a rule is selector=expected_every[/grace] in seconds, got 'site:paris'"),
        ("site:paris=0", "a rule is selector=expected_every[/grace]"),
        ("site:paris=60/soon", "a rule's grace must be whole seconds"),
        ("Site:paris=60", "'Site:paris=60': label must be key:value"),
    ],
)
def test_bad_expectation_rules(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse([], {"FLEET_MONITOR_EXPECT": text})
    assert str(raised.value).startswith(f"FLEET_MONITOR_EXPECT {message}")


def test_public_status_selectors() -> None:
    assert parse(["--public-status", "all"], {}).public_status == ()
    assert parse(["--public-status", "site:paris&kind:gate"], {}).public_status == (
        ("site", "paris"),
        ("kind", "gate"),
    )
    assert parse([], {}).public_status is None
    with pytest.raises(ConfigError) as raised:
        parse([], {"FLEET_MONITOR_PUBLIC_STATUS": "paris"})
    assert str(raised.value).startswith(
        "FLEET_MONITOR_PUBLIC_STATUS must be all or key:value pairs joined by &: label must be "
        "key:value"
    )
