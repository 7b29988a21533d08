"""What a request to the status pages or the badges may see: every device with the read
token (or without tokens), else those ``--public-status`` allows."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g

from fleet_monitor.domain.errors import UnknownDeviceError
from fleet_monitor.domain.history import DeviceSnapshot


@dataclass(frozen=True)
class Scope:
    """The devices with the labels of ``selector``; ``public``: only the public part."""

    selector: tuple[tuple[str, str], ...]
    public: bool

    def within(self, *selectors: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """The scope's selector narrowed by ``selectors`` (all must match)."""
        return tuple(dict.fromkeys((*self.selector, *(p for s in selectors for p in s))))

    def check(self, snapshot: DeviceSnapshot) -> None:
        """Raise UnknownDeviceError (404, as for a device not in the fleet) for a device
        outside the scope."""
        if not snapshot.profile.matches(self.selector):
            raise UnknownDeviceError(snapshot.device_id)


EVERYTHING = Scope((), False)


def scope() -> Scope:
    """The current request's scope (set by the admission before the view)."""
    found: Scope = g.get("scope", EVERYTHING)
    return found


def set_scope(full: bool, public: tuple[tuple[str, str], ...] | None) -> None:
    """Note the request's scope: everything with ``full`` access, else ``public``'s."""
    g.scope = EVERYTHING if full else Scope(public or (), True)
