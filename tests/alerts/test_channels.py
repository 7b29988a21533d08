"""Alert channels against a real local receiver: the signed webhook (its body, signature and
the receiver's check), Apprise's json://, failures that may be retried and those that may
not, bad channel URLs, and ``fleet-monitor alerts test``."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time

import pytest

from fleet_monitor.alerts.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AppriseChannel,
    ChannelError,
    DeliveryError,
    SignedWebhook,
    channel,
    redacted,
    sample_alert,
    sign,
    verify,
)
from tests.conftest import REPO
from tests.support.receiver import receiver

ALERT = sample_alert()


def test_the_signed_webhook_posts_the_alert_signed() -> None:
    with receiver() as hook:
        channel("ops", f"signed+{hook.url}/hook", "s3cret").send(ALERT, 5)
    (got,) = hook.requests
    assert got.path == "/hook"
    assert (
        json.loads(got.body)
        == ALERT.to_json()
        == {
            "id": "0000000000000000",
            "event": "test",
            "subject": "cam-test",
            "state": "down",
            "since": "2026-01-01T00:00:00Z",
            "labels": {"site": "test"},
            "outage_minutes": 3,
            "links": {},
            "detail": "a test alert from fleet-monitor alerts test: nothing is down",
        }
    )
    assert got.headers["Content-Type"] == "application/json"
    stamp, signature = got.headers[TIMESTAMP_HEADER], got.headers[SIGNATURE_HEADER]
    assert abs(int(stamp) - time.time()) < 5
    assert verify("s3cret", stamp, got.body, signature, now_s=time.time())
    assert not verify("other", stamp, got.body, signature, now_s=time.time())
    assert not verify("s3cret", stamp, got.body + b" ", signature, now_s=time.time())
    assert not verify("s3cret", stamp, got.body, signature, now_s=time.time() + 301)  # a replay
    assert not verify("s3cret", "soon", got.body, signature, now_s=time.time())


def test_a_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("key", 1700000000, b"{}") == f"sha256={expected}"


@pytest.mark.parametrize(
    ("status", "retry"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
def test_a_refusal_says_whether_to_try_again(status: int, retry: bool) -> None:
    with receiver(status) as hook, pytest.raises(DeliveryError) as raised:
        SignedWebhook("ops", f"{hook.url}/hook", "s").send(ALERT, 5)
    assert (str(raised.value), raised.value.retry) == (f"ops: HTTP {status}", retry)


def test_an_unreachable_receiver_may_be_tried_again() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DeliveryError) as raised:
        SignedWebhook("ops", f"http://127.0.0.1:{port}/hook", "s").send(ALERT, 2)
    assert raised.value.retry and str(raised.value) == "ops: ConnectionError"


def test_an_apprise_json_channel_posts_title_and_text() -> None:
    with receiver() as hook:
        channel("apprise", hook.url.replace("http://", "json://") + "/notify").send(ALERT, 5)
    (got,) = hook.requests
    body = json.loads(got.body)
    assert (got.path, body["title"]) == ("/notify", "cam-test: test")
    assert body["message"].splitlines()[0] == "cam-test is down since 2026-01-01T00:00:00Z"
    with receiver(500) as hook, pytest.raises(DeliveryError) as raised:
        AppriseChannel("apprise", hook.url.replace("http://", "json://")).send(ALERT, 5)
    assert raised.value.retry


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("signed+https://ops.example/hook", None, "ops: a signed webhook needs a secret"),
        (
            "signed+ftp://ops.example/hook",
            "s",
            "ops: a signed webhook is signed+http:// or signed+https://",
        ),
        ("nonsense", None, "ops: not a URL Apprise can send to: <not a URL>"),
        (
            "nope://tok3n@host/secret-path",
            None,
            "ops: not a URL Apprise can send to: nope://\u2026",
        ),
    ],
)
def test_bad_channel_urls(url: str, secret: str | None, message: str) -> None:
    with pytest.raises(ChannelError) as raised:
        channel("ops", url, secret)
    assert str(raised.value) == message


def test_redaction_shows_no_credential() -> None:
    assert [
        redacted(url)
        for url in (
            "slack://T1/B2/C3?x=1",
            "tgram://123456:AAHdqTcvCH1v/chat",
            "mailto://user:pass@mail.example/?to=a@b",
            "json://127.0.0.1:9?+Authorization=Bearer%20s3cr3t",
            "signed+https://user:pw@ops.example:8443/hook?x=1",
            "json://[::1/",
        )
    ] == [
        "slack://\u2026",
        "tgram://\u2026",
        "mailto://\u2026",
        "json://127.0.0.1/\u2026",
        "signed+https://ops.example/\u2026",
        "json:///\u2026",
    ]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_monitor", "alerts", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_alerts_test_sends_a_sample_alert() -> None:
    with receiver() as hook:
        done = cli("test", "--channel", f"signed+{hook.url}/hook", "--secret", "s")
    assert (done.returncode, done.stdout) == (
        0,
        "sent a test alert to signed+http://127.0.0.1/\u2026\n",
    )
    (got,) = hook.requests
    assert verify(
        "s",
        got.headers[TIMESTAMP_HEADER],
        got.body,
        got.headers[SIGNATURE_HEADER],
        now_s=time.time(),
    )
    with receiver(500) as hook:
        failed = cli("test", "--channel", f"signed+{hook.url}/hook", "--secret", "s")
    assert (failed.returncode, failed.stderr) == (
        1,
        "fleet-monitor: not delivered: test: HTTP 500\n",
    )
    usage = cli("test", "--channel", "signed+http://127.0.0.1:9/hook")
    assert (usage.returncode, usage.stderr) == (
        2,
        "fleet-monitor: error: test: a signed webhook needs a secret\n",
    )
