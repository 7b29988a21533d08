"""Delivery against a real local receiver: retries with backoff until it takes the alert
(once), giving up on a final refusal or after the last try, the per-channel rate, a full
queue, suppressed alerts, the log, and the sender thread."""

from __future__ import annotations

import threading
import time

import pytest

from fleet_monitor.alerts import delivery
from fleet_monitor.alerts.channels import DeliveryError, channel, sample_alert, verify
from fleet_monitor.alerts.delivery import Delivery, Tuning
from fleet_monitor.alerts.rules import ChannelConfig
from tests.support.receiver import receiver

ALERT = sample_alert()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(url: str, per_minute: int = 60, attempts: int = 4) -> tuple[Delivery, Clock, list[str]]:
    clock, counted = Clock(), list[str]()
    config = ChannelConfig("ops", url, per_minute, channel("ops", f"signed+{url}/hook", "s"))
    sender = Delivery(
        {"ops": config},
        Tuning(attempts=attempts, backoff_s=2.0, max_backoff_s=5.0, timeout_s=5.0),
        count=counted.append,
        monotonic=clock,
        wall=lambda: 1_800_000_000 * 10**9,
        jitter=lambda: 1.0,
    )
    return sender, clock, counted


def test_a_receiver_failing_twice_gets_the_alert_once() -> None:
    with receiver(500, 503) as hook:
        sender, clock, counted = setup(hook.url)
        sender.submit(ALERT, ("ops",))
        assert sender.run_due() == 2.0  # tried, refused: again in 2 s
        clock.now += 2.0
        assert sender.run_due() == 4.0  # then 4 s
        clock.now += 4.0
        assert sender.run_due() is None
    assert len(hook.requests) == 3
    assert counted == ["retried", "retried", "sent"]
    (record,) = sender.records()
    assert record.to_json() == {
        "at": "2027-01-15T08:00:00Z",
        "event": "test",
        "subject": "cam-test",
        "channel": "ops",
        "result": "sent",
        "attempts": 3,
        "error": None,
    }
    last = hook.requests[-1]
    assert verify(
        "s",
        last.headers["X-Fleet-Timestamp"],
        last.body,
        last.headers["X-Fleet-Signature"],
        now_s=time.time(),
    )


def test_a_final_refusal_and_the_last_try_give_up() -> None:
    with receiver(400) as hook:
        sender, _, counted = setup(hook.url)
        sender.submit(ALERT, ("ops",))
        assert sender.run_due() is None
    assert (counted, sender.records()[0].error) == (["failed"], "ops: HTTP 400")
    with receiver(500, 500) as hook:
        sender, clock, counted = setup(hook.url, attempts=2)
        sender.submit(ALERT, ("ops",))
        sender.run_due()
        clock.now += 2.0
        assert sender.run_due() is None
    assert counted == ["retried", "failed"]
    assert (sender.records()[0].attempts, sender.pending()) == (2, 0)


def test_the_backoff_is_capped() -> None:
    with receiver(500, 500, 500, 500) as hook:
        sender, clock, _ = setup(hook.url, attempts=6)
        sender.submit(ALERT, ("ops",))
        waits = []
        while (wait := sender.run_due()) is not None:
            waits.append(wait)
            clock.now += wait
    assert waits == [2.0, 4.0, 5.0, 5.0]


def test_a_channel_past_its_rate_waits_its_turn() -> None:
    """``per_minute`` 2: one every 30 s, never more than that in a minute."""
    with receiver() as hook:
        sender, clock, counted = setup(hook.url, per_minute=2)
        for _ in range(3):
            sender.submit(ALERT, ("ops",))
        assert sender.run_due() == pytest.approx(30.0)  # one sent, the next in 30 s
        assert len(hook.requests) == 1
        clock.now += 30.0
        assert sender.run_due() == pytest.approx(30.0)
        clock.now += 30.0
        assert sender.run_due() is None
    assert counted == ["sent"] * 3 and [r.attempts for r in sender.records()] == [1, 1, 1]


def test_a_full_queue_drops_and_suppressed_alerts_are_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "QUEUE_SIZE", 1)
    sender, _, counted = setup("http://127.0.0.1:9")
    sender.submit(ALERT, ("ops",))
    sender.submit(ALERT, ("ops",))
    sender.submit(ALERT, ("ops",), suppressed=True)
    assert counted == ["dropped", "suppressed"]
    assert [r.result for r in sender.records()] == ["suppressed", "dropped"]
    assert sender.pending() == 1


def test_the_sender_thread_delivers_in_the_background() -> None:
    with receiver() as hook:
        config = ChannelConfig("ops", hook.url, 60, channel("ops", f"signed+{hook.url}/hook", "s"))
        sender = Delivery({"ops": config})
        sender.start()
        try:
            sender.submit(ALERT, ("ops",))
            deadline = time.monotonic() + 10
            while not hook.requests and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            sender.stop()
    assert len(hook.requests) == 1 and sender.records()[0].result == "sent"


class Blocking:
    """A channel whose send waits until it is let go."""

    name = "ops"

    def __init__(self) -> None:
        self.entered, self.go = threading.Event(), threading.Event()

    def send(self, alert: object, timeout_s: float) -> None:
        self.entered.set()
        self.go.wait(10)
        raise DeliveryError("ops: HTTP 503", retry=True)


def test_a_delivery_under_way_is_kept_and_a_clear_drops_its_outcome() -> None:
    blocking = Blocking()
    sender = Delivery({"ops": ChannelConfig("ops", "x://", 60, blocking)})
    sender.submit(ALERT, ("ops",))
    worker = threading.Thread(target=sender.run_due)
    worker.start()
    assert blocking.entered.wait(10)
    assert [job["alert"]["id"] for job in sender.export()] == [ALERT.id]  # in flight: kept
    sender.clear()  # another process sends now
    blocking.go.set()
    worker.join(10)
    assert (sender.pending(), sender.export()) == (0, [])  # not put back to be tried again


def test_stop_stops_the_sender_and_errors_do_not() -> None:
    with receiver() as hook:
        config = ChannelConfig(
            "ops", hook.url, 6000, channel("ops", f"signed+{hook.url}/hook", "s")
        )
        calls = []

        def changed() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug after the first outcome")

        sender = Delivery({"ops": config}, changed=changed)
        sender.start()
        try:
            sender.submit(ALERT, ("ops",))
            sender.submit(ALERT, ("ops",))
            deadline = time.monotonic() + 10
            while len(hook.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            sender.stop()
        assert len(hook.requests) == 2  # the sender outlived the error
        sender.submit(ALERT, ("ops",))
        assert sender.run_due() is None and sender.pending() == 1  # stopped: nothing sent
