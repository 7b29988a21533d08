"""Idempotency keys: a device's retried write is recorded once, a reused key is a conflict.

Keys are scoped per kind of write (a heartbeat's key never matches an upload's) and kept with
a fingerprint of what they recorded, so a retry (same key, same event) changes nothing, while
the same key with a different event is refused with :class:`IdempotencyConflictError` rather
than silently dropped, as payment APIs do.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from fleet_monitor.errors import IdempotencyConflictError

HEARTBEAT, UPLOAD = "heartbeat", "upload"
KINDS = (HEARTBEAT, UPLOAD)
KEYS_PER_DEVICE = 1024

# What a key recorded: (sent_at ns, upload ns or None); None for a key restored from an old
# snapshot, which did not keep it: such a key matches any event of either kind.
Fingerprint = tuple[int, int | None]


class KeyMemory:
    """The last :data:`KEYS_PER_DEVICE` keys one device used, oldest first. Not thread-safe:
    the owning record locks it."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: OrderedDict[tuple[str, str], Fingerprint | None] = OrderedDict()

    def is_repeat(self, kind: str, key: str, fingerprint: Fingerprint) -> bool:
        """Whether ``key`` already recorded this very event (then nothing is to change).

        Raises :class:`IdempotencyConflictError` when it recorded a different ``kind`` event.
        """
        scoped = (kind, key)
        if scoped not in self._keys:
            return False
        known = self._keys[scoped]
        if known is not None and known != fingerprint:
            raise IdempotencyConflictError(
                f"Idempotency-Key {key} was already used for a different {kind} of this "
                f"device; send each new {kind} with a new key"
            )
        return True

    def remember(self, kind: str, key: str, fingerprint: Fingerprint | None) -> None:
        """Keep ``key`` for ``kind``, forgetting the oldest beyond :data:`KEYS_PER_DEVICE`."""
        self._keys[(kind, key)] = fingerprint
        if len(self._keys) > KEYS_PER_DEVICE:
            self._keys.popitem(last=False)

    def export(self) -> list[list[Any]]:
        """The keys as JSON-ready ``[kind, key, sent_at_ns, upload_ns]`` rows, oldest first."""
        return [
            [kind, key, *(fingerprint or (None, None))]
            for (kind, key), fingerprint in self._keys.items()
        ]

    @classmethod
    def restore(cls, rows: list[Any]) -> KeyMemory:
        """The memory :meth:`export` wrote; a bare string (an older snapshot) is a key of
        both kinds that matches any event."""
        memory = cls()
        for row in rows:
            if isinstance(row, str):
                for kind in KINDS:
                    memory.remember(kind, row, None)
                continue
            kind, key, sent_at_ns, upload_ns = row
            memory.remember(kind, key, None if sent_at_ns is None else (sent_at_ns, upload_ns))
        return memory
