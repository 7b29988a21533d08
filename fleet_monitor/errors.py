"""The domain's errors; the HTTP layer maps each to one status code."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """A body, field or query value the API does not accept; str() says which and why (400)."""


class UnknownDeviceError(LookupError):
    """The device id is not in the fleet (404)."""
