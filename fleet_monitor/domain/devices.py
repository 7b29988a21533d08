"""The device id rule, shared by the devices file, the registry and every route."""

from __future__ import annotations

import re

from fleet_monitor.domain.errors import InvalidInputError

DEVICE_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : -"
DEVICE_ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"
DOT_SEGMENT_RULE = "cannot be . or .. (clients normalise such path segments away)"
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN, re.ASCII)


def device_id_problem(device_id: str) -> str | None:
    """What is wrong with ``device_id`` (a phrase to follow "must be" or "cannot be"), or None.

    An id is :data:`DEVICE_ID_RULE`, and not ``.`` or ``..``: an HTTP client removes those
    from a URL path, so a device with such an id could never be reached.
    """
    if _DEVICE_ID.fullmatch(device_id) is None:
        return f"must be {DEVICE_ID_RULE}"
    if device_id in (".", ".."):
        return DOT_SEGMENT_RULE
    return None


def is_valid_device_id(device_id: str) -> bool:
    """Whether ``device_id`` is a valid id (see :func:`device_id_problem`)."""
    return device_id_problem(device_id) is None


def check_device_id(device_id: str) -> str:
    """``device_id`` itself; raises InvalidInputError naming the rule when it breaks it."""
    if (problem := device_id_problem(device_id)) is not None:
        raise InvalidInputError(f"device_id {problem}", "invalid_device_id")
    return device_id
