"""The alerts' state across a restart: saved and loaded whole, a damaged file set aside, the
episodes and the waiting deliveries taken back for the rules and channels still in force."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_monitor.alerts.channels import channel, sample_alert
from fleet_monitor.alerts.delivery import Delivery
from fleet_monitor.alerts.persist import FILE, AlertState
from fleet_monitor.alerts.rules import AlertRules, AlertsError, ChannelConfig, Rule, load_rules
from fleet_monitor.alerts.service import Alerting
from fleet_monitor.alerts.states import Evaluator
from fleet_monitor.domain.history import DeviceHead
from fleet_monitor.domain.profiles import Profile
from fleet_monitor.domain.readmodels import Expectations
from fleet_monitor.store.memory import MemoryStore

S = 10**9
RULE = Rule("r", (), (), ("down", "recovered"), 0, 0, ("ops",))


def test_episodes_and_deliveries_survive_a_restart(tmp_path: Path) -> None:
    config = ChannelConfig("ops", "json://h/p", 60, channel("ops", "json://h/p"))
    rules = AlertRules({"ops": config}, (RULE,), ())
    evaluator, sender = Evaluator(rules, Expectations()), Delivery(rules.channels)
    down = [DeviceHead("cam", 0, Profile())]
    (out,) = evaluator.evaluate(down, 1000 * S, ())
    sender.submit(out.alert, out.channels)
    assert evaluator.changed
    AlertState(tmp_path).save(evaluator.export(), sender.export())
    assert not evaluator.changed

    saved = AlertState(tmp_path).load()
    again, resent = Evaluator(rules, Expectations()), Delivery(rules.channels)
    again.restore(saved)
    resent.restore(saved["pending"])
    assert again.evaluate(down, 2000 * S, ()) == []  # already told
    assert resent.export() == sender.export()  # the same alert, id included
    (back,) = again.evaluate([DeviceHead("cam", 2000 * S, Profile())], 2000 * S, ())
    assert back.alert.event == "recovered"
    other = AlertRules({}, (Rule("other", (), (), ("down",), 0, 0, ("ops",)),), ())
    gone = Evaluator(other, Expectations())
    gone.restore(saved)  # a rule no longer in force: its episodes are dropped
    assert len(gone.evaluate(down, 2000 * S, ())) == 1
    nowhere = Delivery({})
    nowhere.restore(saved["pending"])
    assert nowhere.pending() == 0


def test_a_damaged_state_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / FILE).write_text("{not json")
    assert AlertState(tmp_path).load() == {}
    assert (tmp_path / "alerts.damaged").read_text() == "{not json"
    assert "cannot be read" in caplog.text
    assert AlertState(tmp_path / "none").load() == {}
    AlertState(tmp_path / "none").save({}, [])  # cannot be written: logged, not raised
    assert "could not be saved" in caplog.text
    assert sample_alert().id == "0000000000000000"


def test_rule_names_are_unique(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(
        '[channels.a]\nurl = "json://h/p"\n'
        '[[rules]]\nname = "x"\nchannels = ["a"]\n[[rules]]\nname = "x"\nchannels = ["a"]\n'
    )
    with pytest.raises(AlertsError, match="two rules are named 'x'"):
        load_rules(path, {})


def test_a_state_of_the_right_version_but_wrong_contents_is_set_aside(tmp_path: Path) -> None:
    rules = AlertRules({}, (RULE,), ())
    bad = '{"version": 1, "devices": [["r", "cam", {"event": "down"}]], "pending": []}'
    (tmp_path / FILE).write_text(bad)
    alerting = Alerting(
        rules, MemoryStore(["cam"]), Expectations(), lambda: 0, state=AlertState(tmp_path)
    )
    assert alerting.evaluator.export()["devices"] == []  # started without it
    assert (tmp_path / "alerts.damaged").read_text() == bad
    (tmp_path / FILE).write_text('{"version": 99}')
    assert AlertState(tmp_path).load() == {}  # another version: set aside too
    assert (tmp_path / "alerts.damaged").read_text() == '{"version": 99}'
