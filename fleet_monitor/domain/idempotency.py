"""Idempotency keys: a device's retried write is recorded once, a reused key is a conflict.

Keys are scoped per kind of write (a heartbeat's key never matches an upload's) and kept with
a fingerprint of what they recorded, so a retry (same key, same event) changes nothing, while
the same key with a different event is refused with :class:`IdempotencyConflictError` rather
than silently dropped, as payment APIs do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from fleet_monitor.domain.errors import IdempotencyConflictError
from fleet_monitor.domain.events import HEARTBEAT, UPLOAD

KINDS = (HEARTBEAT, UPLOAD)
KEYS_PER_DEVICE = 1024
KEY_OVERHEAD = 100  # estimated bytes a remembered key holds beside its characters


def key_cost(kind: str, key: str) -> int:
    """Estimated bytes one remembered key holds (for the history budget)."""
    return len(kind) + len(key) + KEY_OVERHEAD


# What a key recorded: (sent_at ns, upload ns or None); None when that is not known (a key
# restored from an older snapshot): such a key matches any event.
Fingerprint = tuple[int, int | None]


def key_conflict(kind: str, key: str) -> IdempotencyConflictError:
    """The refusal of ``key`` reused for a different ``kind`` event of the same device."""
    return IdempotencyConflictError(
        f"Idempotency-Key {key} was already used for a different {kind} of this device; "
        f"send each new {kind} with a new key"
    )


class KeyMemory:
    """The last :data:`KEYS_PER_DEVICE` keys one device used, oldest first. Not thread-safe:
    the owning record locks it."""

    __slots__ = ("_keys", "cost")

    def __init__(self) -> None:
        self._keys: OrderedDict[tuple[str, str], Fingerprint | None] = OrderedDict()
        self.cost = 0  # estimated bytes of the keys remembered (see key_cost)

    def is_repeat(self, kind: str, key: str, fingerprint: Fingerprint) -> bool:
        """Whether ``key`` already recorded this very event (then nothing is to change).

        Raises :class:`IdempotencyConflictError` when it recorded a different ``kind`` event.
        """
        scoped = (kind, key)
        if scoped not in self._keys:
            return False
        known = self._keys[scoped]
        if known is not None and known != fingerprint:
            raise key_conflict(kind, key)
        return True

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, str, Fingerprint | None]]) -> KeyMemory:
        """The memory whose :meth:`items` these are."""
        memory = cls()
        for kind, key, fingerprint in items:
            memory.remember(kind, key, fingerprint)
        return memory

    def remember(self, kind: str, key: str, fingerprint: Fingerprint | None) -> None:
        """Keep ``key`` for ``kind``, forgetting the oldest beyond :data:`KEYS_PER_DEVICE`."""
        if (kind, key) not in self._keys:
            self.cost += key_cost(kind, key)
        self._keys[(kind, key)] = fingerprint
        if len(self._keys) > KEYS_PER_DEVICE:
            (old_kind, old_key), _ = self._keys.popitem(last=False)
            self.cost -= key_cost(old_kind, old_key)

    def items(self) -> Iterator[tuple[str, str, Fingerprint | None]]:
        """Each remembered ``(kind, key, fingerprint)``, oldest first."""
        for (kind, key), fingerprint in self._keys.items():
            yield kind, key, fingerprint
