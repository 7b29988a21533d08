"""The domain's errors; the HTTP layer maps each to one status code (``http/errors.py``)."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """A body, field or query value the API does not accept; str() says which and why (400).

    ``reason`` is a short fixed label for the kind of mistake (a metrics label, never user text).
    """

    status = 400

    def __init__(self, message: str, reason: str = "invalid_input") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownDeviceError(LookupError):
    """The device id is not in the fleet (404)."""


class RateLimitedError(Exception):
    """Too many requests for a limit (429); str() says which; retry after ``retry_after`` s."""

    reason = "rate_limited"

    def __init__(self, retry_after: float, message: str = "too many requests") -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LimitExceededError(InvalidInputError):
    """A write the service's bounds do not allow: a budget is spent, or ``sent_at`` is
    outside the accepted range (422); str() names the limit and its setting."""

    status = 422


class IdempotencyConflictError(InvalidInputError):
    """An Idempotency-Key the device already used for a different event (409)."""

    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message, "idempotency_conflict")


class StoreUnavailableError(Exception):
    """The store could not keep a change (a journal that cannot be written, an engine that
    cannot be reached): nothing changed (503); str() says why. ``retry_after`` (seconds), when
    known, tells clients when to try again."""

    reason = "store_unavailable"
    retry_after: int | None = None

    def sentence(self) -> str:
        """What the client is told (``msg``)."""
        return f"the change was not stored: {self}"


class NotConfirmedError(StoreUnavailableError):
    """A change was recorded (and is kept) but could not be confirmed durable, e.g. an fsync
    failed (503): the one error after which something *was* stored. A retry carrying the same
    Idempotency-Key is safe; one without may record the change twice."""

    reason = "not_confirmed"
    retry_after = 1

    def sentence(self) -> str:
        """What the client is told."""
        return (
            f"the change was recorded but could not be confirmed on disk ({self}); a retry "
            "records it again unless it carries the same Idempotency-Key"
        )
