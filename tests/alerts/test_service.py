"""Alerting over a store: evaluations queue what is due, and with a lease only its holder
sends, carrying on from the state kept when it takes the lease over."""

from __future__ import annotations

from typing import Any

from fleet_monitor.alerts.channels import channel
from fleet_monitor.alerts.rules import AlertRules, ChannelConfig, Rule
from fleet_monitor.alerts.service import Alerting
from fleet_monitor.domain.events import Heartbeat
from fleet_monitor.domain.readmodels import Expectations
from fleet_monitor.store.memory import MemoryStore

S = 10**9
T0 = 1_800_000_000 * S
CONFIG = ChannelConfig("ops", "json://127.0.0.1:9/x", 60, channel("ops", "json://127.0.0.1:9/x"))
RULES = AlertRules({"ops": CONFIG}, (Rule("r", (), (), ("down", "recovered"), 0, 0, ("ops",)),), ())
EXPECT = Expectations(expected_every_ns=S, grace_ns=S)


class Kept:
    """A state keeper in memory (the engine's, in a test)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        return dict(self.state)

    def save(self, episodes: dict[str, Any], pending: list[dict[str, Any]]) -> None:
        self.state = {"version": 1, **episodes, "pending": pending}

    def set_aside(self) -> None:
        self.state = {"set aside": True}


def test_only_the_lease_holder_sends_and_a_new_holder_carries_on() -> None:
    store = MemoryStore(["cam"])
    now = [T0]
    holder = ["a"]
    kept = Kept()
    one, two = (Alerting(RULES, store, EXPECT, lambda: now[0]) for _ in range(2))
    one.share(lambda: holder[0] == "a", kept)
    two.share(lambda: holder[0] == "b", kept)
    store.record("cam", Heartbeat(T0, T0), None)
    now[0] += 3 * S
    assert (one.tick(), two.tick()) == (1, 0)  # the down, once
    assert one.delivery.pending() == 1 and kept.state["pending"]
    holder[0] = "b"
    assert (one.tick(), two.tick()) == (0, 0)  # b carries on: the down is told, not again
    assert one.delivery.pending() == 0 and two.delivery.pending() == 1  # the waiting one moved
    store.record("cam", Heartbeat(now[0], now[0]), None)
    assert two.tick() == 1  # the recovery
    assert [job["alert"]["event"] for job in kept.state["pending"]] == ["down", "recovered"]


def test_without_a_lease_every_tick_evaluates() -> None:
    store = MemoryStore(["cam"])
    store.record("cam", Heartbeat(T0, T0), None)
    alerting = Alerting(RULES, store, EXPECT, lambda: T0 + 3 * S)
    assert (alerting.tick(), alerting.tick()) == (1, 0)
    assert alerting.delivery.pending() == 1
