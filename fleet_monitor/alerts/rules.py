"""Alert rules, read from a TOML file (``--alerts FILE``, the standard library's ``tomllib``).

```toml
[channels.ops]
url = "signed+https://ops.example/hook"
secret_env = "OPS_HOOK_SECRET"      # or secret = "…" (the environment keeps it out of files)
per_minute = 30                      # at most this many sends a minute (default 60)

[[rules]]
name = "paris cameras"
labels = { site = "paris" }          # the devices with all these labels (none: every device)
devices = ["cam-01"]                 # or these ids (both: either)
on = ["down", "recovered"]           # down, late, recovered, clock_drift, upload_slow
hold = 60                            # seconds the state must hold before it is sent
repeat = 3600                        # seconds between repeats while it holds (0: never)
channels = ["ops"]

[[group_rules]]
name = "a site is down"
group_by = "site"
threshold = 50                       # percent of a group's watched devices down
min_devices = 2                      # groups smaller than this are not judged
on = ["group_down", "group_recovered"]
channels = ["ops"]
```

While a group rule holds for a group, the per-device alerts of its devices are not sent (one
alert, not an alert storm, when a site loses power). Every problem is an :class:`AlertsError`
naming the file and the field.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_monitor.alerts.channels import Channel, ChannelError, channel, redacted
from fleet_monitor.domain.profiles import LABEL_KEY, Profile

DEVICE_EVENTS = ("down", "late", "recovered", "clock_drift", "upload_slow")
GROUP_EVENTS = ("group_down", "group_recovered")
MAX_RULES = 100
RULE_FIELDS = (
    *("name", "labels", "devices", "on", "hold", "repeat", "channels"),
    *("upload_above", "upload_p95"),
)
MAX_SECONDS = 7 * 86400


class AlertsError(ValueError):
    """The alerts file cannot be used; str() names the file and the field."""


@dataclass(frozen=True)
class ChannelConfig:
    """A channel as the file names it, and what it sends to."""

    name: str
    url: str
    per_minute: int
    channel: Channel

    def to_json(self) -> dict[str, Any]:
        """What ``GET /alerts/rules`` shows: never the URL's path or the secret."""
        return {"name": self.name, "url": redacted(self.url), "per_minute": self.per_minute}


@dataclass(frozen=True)
class Rule:
    """Per-device alerts: the devices it selects, the events it sends, when and where."""

    name: str
    labels: tuple[tuple[str, str], ...]
    devices: tuple[str, ...]
    on: tuple[str, ...]
    hold_s: int
    repeat_s: int
    channels: tuple[str, ...]
    upload_above_s: float | None = None  # upload_slow: a new upload's time above this
    upload_p95: bool = False  # upload_slow: above the device's own p95 (its recent uploads)

    def selects(self, device_id: str, profile: Profile) -> bool:
        """Whether the rule watches this device."""
        if not self.labels and not self.devices:
            return True
        return device_id in self.devices or bool(self.labels and profile.matches(self.labels))

    def to_json(self) -> dict[str, Any]:
        """The rule as ``GET /alerts/rules`` shows it."""
        return {
            "name": self.name,
            "labels": dict(self.labels),
            "devices": list(self.devices),
            "on": list(self.on),
            "hold": self.hold_s,
            "repeat": self.repeat_s,
            "channels": list(self.channels),
            "upload_above": self.upload_above_s,
            "upload_p95": self.upload_p95,
        }


@dataclass(frozen=True)
class GroupRule:
    """Group alerts: a group of label ``group_by`` is down while more than ``threshold``
    percent of its watched devices are."""

    name: str
    group_by: str
    threshold: float
    min_devices: int
    on: tuple[str, ...]
    channels: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The rule as ``GET /alerts/rules`` shows it."""
        return {
            "name": self.name,
            "group_by": self.group_by,
            "threshold": self.threshold,
            "min_devices": self.min_devices,
            "on": list(self.on),
            "channels": list(self.channels),
        }


@dataclass(frozen=True)
class AlertRules:
    """Everything the alerts file says."""

    channels: dict[str, ChannelConfig]
    rules: tuple[Rule, ...]
    group_rules: tuple[GroupRule, ...]

    def to_json(self) -> dict[str, Any]:
        """``GET /api/v1/alerts/rules``."""
        return {
            "channels": [c.to_json() for c in self.channels.values()],
            "rules": [r.to_json() for r in self.rules],
            "group_rules": [r.to_json() for r in self.group_rules],
        }


NO_RULES = AlertRules({}, (), ())


class _Fields:
    """One table of the file, read field by field with errors that name it."""

    def __init__(self, where: str, table: object) -> None:
        if not isinstance(table, dict):
            raise AlertsError(f"{where} must be a table")
        self.where, self.table = where, table

    def fail(self, name: str, rule: str) -> AlertsError:
        return AlertsError(f"{self.where}.{name} {rule}")

    def text(self, name: str, default: str | None = None) -> str:
        value = self.table.get(name, default)
        if not isinstance(value, str) or not value or len(value) > 1000:
            raise self.fail(name, "must be a string of 1 to 1000 characters")
        return value

    def number(self, name: str, default: int, low: int, high: int) -> int:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(name, f"must be a whole number from {low} to {high}")
        return value

    def names(
        self, name: str, allowed: tuple[str, ...], default: tuple[str, ...] = ()
    ) -> tuple[str, ...]:
        value = self.table.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a list of strings")
        if allowed and (bad := [v for v in value if v not in allowed]):
            raise self.fail(name, f"must be some of {', '.join(allowed)}; got {bad[0]!r}")
        return tuple(dict.fromkeys(value))

    def check_known(self, known: tuple[str, ...]) -> None:
        if unknown := sorted(set(self.table) - set(known)):
            raise self.fail(unknown[0], f"is not a field (fields: {', '.join(known)})")


def load_rules(path: Path, environ: dict[str, str] | None = None) -> AlertRules:
    """The rules of ``path``; raises AlertsError naming what is wrong."""
    environ = dict(os.environ) if environ is None else environ
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AlertsError(f"{path}: cannot read the alerts file: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AlertsError(f"{path}: not TOML: {error}") from None
    top = _Fields(str(path), document)
    top.check_known(("channels", "rules", "group_rules"))
    channels = _channels(path, document.get("channels", {}), environ)
    rules = tuple(
        _rule(f"{path}: rules[{n}]", table, channels) for n, table in enumerate(_list(top, "rules"))
    )
    groups = tuple(
        _group_rule(f"{path}: group_rules[{n}]", table, channels)
        for n, table in enumerate(_list(top, "group_rules"))
    )
    if len(rules) + len(groups) > MAX_RULES:
        raise AlertsError(f"{path}: at most {MAX_RULES} rules")
    names = [rule.name for rule in rules] + [rule.name for rule in groups]
    if repeated := next((name for name in names if names.count(name) > 1), None):
        raise AlertsError(f"{path}: two rules are named {repeated!r} (a rule's name is its key)")
    return AlertRules(channels, rules, groups)


def _list(top: _Fields, name: str) -> list[object]:
    value = top.table.get(name, [])
    if not isinstance(value, list):
        raise top.fail(name, "must be an array of tables ([[" + name + "]])")
    return value


def _channels(path: Path, tables: object, environ: dict[str, str]) -> dict[str, ChannelConfig]:
    found: dict[str, ChannelConfig] = {}
    if not isinstance(tables, dict):
        raise AlertsError(f"{path}: channels must be a table of channels ([channels.NAME])")
    for name, table in tables.items():
        fields = _Fields(f"{path}: channels.{name}", table)
        fields.check_known(("url", "secret", "secret_env", "per_minute"))
        url = fields.text("url", "")
        secret = fields.table.get("secret")
        if "secret_env" in fields.table:
            variable = fields.text("secret_env")
            if variable not in environ:
                raise fields.fail("secret_env", f"names {variable}, which is not set")
            secret = environ[variable]
        if secret is not None and not isinstance(secret, str):
            raise fields.fail("secret", "must be a string")
        try:
            target = channel(name, url, secret)
        except ChannelError as error:
            raise AlertsError(f"{path}: channels.{error}") from None
        found[name] = ChannelConfig(name, url, fields.number("per_minute", 60, 1, 6000), target)
    return found


def _targets(fields: _Fields, channels: dict[str, ChannelConfig]) -> tuple[str, ...]:
    names = fields.names("channels", ())
    if not names:
        raise fields.fail("channels", "must name at least one channel")
    if missing := [n for n in names if n not in channels]:
        raise fields.fail("channels", f"names {missing[0]!r}, not a channel of [channels]")
    return names


def _rule(where: str, table: object, channels: dict[str, ChannelConfig]) -> Rule:
    fields = _Fields(where, table)
    fields.check_known(RULE_FIELDS)
    labels = fields.table.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and LABEL_KEY.fullmatch(k) and isinstance(v, str) and v
        for k, v in labels.items()
    ):
        raise fields.fail("labels", "must be a table of label keys to values")
    above = fields.table.get("upload_above")
    if above is not None and (
        isinstance(above, bool) or not isinstance(above, int | float) or not 0 < above <= 86400
    ):
        raise fields.fail("upload_above", "must be seconds, above 0, at most 86400")
    p95 = fields.table.get("upload_p95", False)
    if not isinstance(p95, bool):
        raise fields.fail("upload_p95", "must be true or false")
    on = fields.names("on", DEVICE_EVENTS, ("down", "recovered"))
    if ("upload_slow" in on) != (above is not None or p95):
        raise fields.fail("on", "has upload_slow exactly when upload_above or upload_p95 is set")
    return Rule(
        fields.text("name"),
        tuple(sorted(labels.items())),
        fields.names("devices", ()),
        on,
        fields.number("hold", 0, 0, MAX_SECONDS),
        fields.number("repeat", 0, 0, MAX_SECONDS),
        _targets(fields, channels),
        None if above is None else float(above),
        p95,
    )


def _group_rule(where: str, table: object, channels: dict[str, ChannelConfig]) -> GroupRule:
    fields = _Fields(where, table)
    fields.check_known(("name", "group_by", "threshold", "min_devices", "on", "channels"))
    key = fields.text("group_by")
    if not LABEL_KEY.fullmatch(key):
        raise fields.fail("group_by", "must be a label key")
    threshold = fields.table.get("threshold", 50)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0 <= threshold < 100
    ):
        raise fields.fail("threshold", "must be a percent from 0 to under 100")
    return GroupRule(
        fields.text("name"),
        key,
        float(threshold),
        fields.number("min_devices", 2, 1, 1_000_000),
        fields.names("on", GROUP_EVENTS, GROUP_EVENTS),
        _targets(fields, channels),
    )
