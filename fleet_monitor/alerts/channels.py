"""Where alerts go: the service's own signed webhook, or any Apprise URL (``json://``,
``slack://``, ``mailto://``, ``ntfy://``, ``tgram://``, ``msteams://``, ``pagerduty://``, …).

The signed webhook POSTs the alert as JSON with ``X-Fleet-Timestamp`` (Unix seconds) and
``X-Fleet-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>``, so a
receiver can check it came from us (:func:`verify`) and refuse a replay (a timestamp more than
:data:`TOLERANCE_S` away from its clock). Its URL is the receiver's with ``signed+`` before it
(``signed+https://ops.example/hook``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import apprise
import requests

SIGNED = "signed+"
SIGNATURE_HEADER = "X-Fleet-Signature"
TIMESTAMP_HEADER = "X-Fleet-Timestamp"
TOLERANCE_S = 300  # how far a receiver should accept a timestamp from its own clock


class ChannelError(ValueError):
    """A channel that cannot be used as given (its URL, its secret)."""


class DeliveryError(Exception):
    """An alert was not delivered; ``retry``: whether trying again may help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Alert:
    """What a channel is told: ``event`` (``down``, ``late``, ``recovered``, ``clock_drift``,
    ``upload_slow``, ``group_down``, ``group_recovered``, ``test``) about a device or a group."""

    event: str
    subject: str  # the device id, or the group as key:value
    state: str
    since: str | None  # RFC 3339: when the state began
    labels: dict[str, str] = field(default_factory=dict)
    outage_minutes: int | None = None
    links: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # the same on every try

    @property
    def title(self) -> str:
        """One line for a human."""
        return f"{self.subject}: {self.event.replace('_', ' ')}"

    @property
    def text(self) -> str:
        """A few lines for a human (Apprise channels)."""
        lines = [f"{self.subject} is {self.state}" + (f" since {self.since}" if self.since else "")]
        if self.outage_minutes is not None:
            lines.append(f"down for {self.outage_minutes} minutes")
        if self.detail:
            lines.append(self.detail)
        lines += [f"{name}: {url}" for name, url in self.links.items()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The webhook's body (``id``: a receiver that got it twice, after a crash between
        its answer and our note of it, can tell)."""
        return {
            "id": self.id,
            "event": self.event,
            "subject": self.subject,
            "state": self.state,
            "since": self.since,
            "labels": self.labels,
            "outage_minutes": self.outage_minutes,
            "links": self.links,
            "detail": self.detail,
        }

    @staticmethod
    def from_json(fields: dict[str, Any]) -> Alert:
        """The alert :meth:`to_json` wrote."""
        return Alert(
            fields["event"],
            fields["subject"],
            fields["state"],
            fields["since"],
            fields["labels"],
            fields["outage_minutes"],
            fields["links"],
            fields["detail"],
            fields["id"],
        )


class Channel(Protocol):
    """Sends an alert; raises DeliveryError when it was not delivered."""

    name: str

    def send(self, alert: Alert, timeout_s: float) -> None:
        """Deliver ``alert`` within about ``timeout_s``."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now_s: float,
    tolerance_s: int = TOLERANCE_S,
) -> bool:
    """What a receiver checks: the signature is ours over this body and timestamp, and the
    timestamp within ``tolerance_s`` of its clock (an older one may be a replay)."""
    if (
        not (timestamp.isascii() and timestamp.isdigit())
        or abs(now_s - int(timestamp)) > tolerance_s
    ):
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


@dataclass
class SignedWebhook:
    """The service's own webhook: JSON, signed (see the module)."""

    name: str
    url: str  # http:// or https://, without the signed+ prefix
    secret: str

    def send(self, alert: Alert, timeout_s: float) -> None:
        body = json.dumps(alert.to_json(), separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fleet-monitor",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
        }
        try:
            response = requests.post(self.url, data=body, headers=headers, timeout=timeout_s)
        except requests.RequestException as error:
            raise DeliveryError(f"{self.name}: {type(error).__name__}", retry=True) from None
        if response.status_code >= 300:
            retry = response.status_code == 429 or response.status_code >= 500
            raise DeliveryError(f"{self.name}: HTTP {response.status_code}", retry=retry)


@dataclass
class AppriseChannel:
    """Any service Apprise knows, by its URL."""

    name: str
    url: str

    def __post_init__(self) -> None:
        self._apprise = apprise.Apprise()
        if not self._apprise.add(self.url):
            raise ChannelError(f"{self.name}: not a URL Apprise can send to: {redacted(self.url)}")

    def send(self, alert: Alert, timeout_s: float) -> None:
        del timeout_s  # each Apprise service has its own timeouts
        if not self._apprise.notify(title=alert.title, body=alert.text):
            raise DeliveryError(
                f"{self.name}: the service refused it or was not reached", retry=True
            )


def channel(name: str, url: str, secret: str | None = None) -> Channel:
    """The channel of ``url``: ``signed+http(s)://…`` the signed webhook (``secret`` needed),
    anything else an Apprise URL. Raises ChannelError."""
    if url.startswith(SIGNED):
        target = url[len(SIGNED) :]
        if not target.startswith(("http://", "https://")):
            raise ChannelError(f"{name}: a signed webhook is signed+http:// or signed+https://")
        if not secret:
            raise ChannelError(f"{name}: a signed webhook needs a secret")
        return SignedWebhook(name, target, secret)
    return AppriseChannel(name, url)


def sample_alert() -> Alert:
    """The alert ``fleet-monitor alerts test`` sends."""
    return Alert(
        "test",
        "cam-test",
        "down",
        "2026-01-01T00:00:00Z",
        {"site": "test"},
        outage_minutes=3,
        detail="a test alert from fleet-monitor alerts test: nothing is down",
        id="0000000000000000",
    )


WEB_SCHEMES = {"http", "https", "json", "jsons", "xml", "xmls", "form", "forms"}


def redacted(url: str) -> str:
    """``url`` as far as it is safe to show: for a web URL (http, json, xml, form, the signed
    webhook) its host; for any other Apprise URL its scheme alone (their "host" is often a
    token: ``tgram://<bot token>/…``). Never a user, password, path or query."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>"
    if scheme.removeprefix(SIGNED) not in WEB_SCHEMES:
        return f"{scheme}://…"
    try:
        host = urlsplit("//" + rest).hostname or ""
    except ValueError:  # a broken IPv6 address
        host = ""
    return f"{scheme}://{host}/…"
