"""The domain's errors; the HTTP layer maps each to one status code."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """A body, field or query value the API does not accept; str() says which and why (400).

    ``reason`` is a short fixed label for the kind of mistake (a metrics label, never user text).
    """

    def __init__(self, message: str, reason: str = "invalid_input") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownDeviceError(LookupError):
    """The device id is not in the fleet (404)."""


class RateLimitedError(Exception):
    """The device wrote faster than the configured rate (429); retry after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.3f} s")
        self.retry_after = retry_after
