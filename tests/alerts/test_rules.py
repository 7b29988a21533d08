"""The alerts file: what it says, and every field that is wrong named."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_monitor.alerts.rules import AlertsError, GroupRule, Rule, load_rules
from fleet_monitor.domain.profiles import Profile

GOOD = """
[channels.ops]
url = "signed+https://ops.example/hook"
secret_env = "OPS_SECRET"
per_minute = 30

[channels.feed]
url = "json://feed.example/alerts"

[[rules]]
name = "paris"
labels = { site = "paris" }
on = ["down", "late", "recovered"]
hold = 60
repeat = 3600
channels = ["ops", "feed"]

[[group_rules]]
name = "sites"
group_by = "site"
threshold = 50
channels = ["ops"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    return path


def test_a_good_file(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, GOOD), {"OPS_SECRET": "s"})
    assert rules.rules == (
        Rule(
            "paris",
            (("site", "paris"),),
            (),
            ("down", "late", "recovered"),
            60,
            3600,
            ("ops", "feed"),
        ),
    )
    assert rules.group_rules == (
        GroupRule("sites", "site", 50.0, 2, ("group_down", "group_recovered"), ("ops",)),
    )
    assert rules.to_json()["channels"] == [
        {"name": "ops", "url": "signed+https://ops.example/\u2026", "per_minute": 30},
        {"name": "feed", "url": "json://feed.example/\u2026", "per_minute": 60},
    ]
    rule = rules.rules[0]
    assert rule.selects("x", Profile((("site", "paris"),)))
    assert not rule.selects("x", Profile((("site", "lyon"),)))
    every = Rule("all", (), (), ("down",), 0, 0, ("ops",))
    assert every.selects("x", Profile())
    ids = Rule("ids", (), ("cam-1",), ("down",), 0, 0, ("ops",))
    assert ids.selects("cam-1", Profile()) and not ids.selects("cam-2", Profile())


A = '[channels.a]\nurl = "json://h/p"\n'
R = A + '[[rules]]\nname = "r"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]\n", "not TOML"),
        ("color = 1", "color is not a field (fields: channels, rules, group_rules)"),
        ('[channels.a]\nurl = "signed+https://h/p"', "channels.a: a signed webhook needs a secret"),
        (
            '[channels.a]\nurl = "https://h/p"\nsecret_env = "NOPE"',
            "channels.a.secret_env names NOPE, which is not set",
        ),
        (
            A + "per_minute = 0",
            "channels.a.per_minute must be a whole number from 1 to 6000",
        ),
        (
            R + 'channels = ["b"]',
            "rules[0].channels names 'b', not a channel of [channels]",
        ),
        (
            R + "channels = []",
            "rules[0].channels must name at least one channel",
        ),
        (
            R + 'on = ["gone"]\nchannels = ["a"]',
            "rules[0].on must be some of down, late, recovered, clock_drift, upload_slow; "
            "got 'gone'",
        ),
        (
            R + 'hold = -1\nchannels = ["a"]',
            "rules[0].hold must be a whole number from 0 to 604800",
        ),
        (
            R + 'labels = { Site = "x" }\nchannels = ["a"]',
            "rules[0].labels must be a table of label keys to values",
        ),
        (
            A + '[[rules]]\nchannels = ["a"]',
            "rules[0].name must be a string of 1 to 1000 characters",
        ),
        (
            A + '[[group_rules]]\nname = "g"\ngroup_by = "site"\nthreshold = 100\nchannels = ["a"]',
            "group_rules[0].threshold must be a percent from 0 to under 100",
        ),
        ("rules = 3", "rules must be an array of tables ([[rules]])"),
        (
            R + 'on = ["upload_slow"]\nchannels = ["a"]',
            "rules[0].on has upload_slow exactly when upload_above or upload_p95 is set",
        ),
        (
            R + 'upload_above = 0\non = ["upload_slow"]\nchannels = ["a"]',
            "rules[0].upload_above must be seconds, above 0, at most 86400",
        ),
        (
            R + 'upload_p95 = 1\nchannels = ["a"]',
            "rules[0].upload_p95 must be true or false",
        ),
    ],
)
def test_a_bad_file_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(AlertsError) as raised:
        load_rules(path, {})
    assert str(raised.value).startswith(f"{path}") and message in str(raised.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AlertsError, match="cannot read the alerts file"):
        load_rules(tmp_path / "none.toml", {})
