"""The query parameters the routes share, parsed once: cursors, page sizes, whole numbers,
choices and instants; each bad value a 400 naming the parameter."""

from __future__ import annotations

import base64
import binascii

from flask import request

from fleet_monitor.domain.devices import is_valid_device_id
from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.events import parse_timestamp

MAX_PAGE = 1000
DEFAULT_PAGE = 100


def encode_cursor(text: str) -> str:
    """``text`` as an opaque ``next`` cursor (URL-safe base64, unpadded)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def bad_cursor() -> InvalidInputError:
    """The 400 for a cursor this service did not give."""
    return InvalidInputError("cursor is not one this service returned in next", "invalid_query")


def decoded(cursor: str) -> str:
    """What :func:`encode_cursor` encoded ("" for anything else)."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


def decode_cursor(cursor: str) -> str:
    """The device id a device list's cursor holds; raises InvalidInputError."""
    device_id = decoded(cursor)
    if not is_valid_device_id(device_id):
        raise bad_cursor()
    return device_id


def form_value(name: str) -> str | None:
    """The query's ``name`` as a page's form sends it: an empty field is no value."""
    return request.args.get(name) or None


def whole_number(name: str, default: int, most: int, *, form: bool = False) -> int:
    """The query's ``name``, a whole number from 1 to ``most`` (``default`` when absent, or
    empty from a ``form``)."""
    text = form_value(name) if form else request.args.get(name)
    if text is None:
        return default
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(most))
    if not digits or not 1 <= int(text) <= most:
        raise InvalidInputError(f"{name} must be a whole number from 1 to {most}", "invalid_query")
    return int(text)


def page_size() -> int:
    """``?limit=``: a page's size, 1 to :data:`MAX_PAGE` (default :data:`DEFAULT_PAGE`)."""
    return whole_number("limit", DEFAULT_PAGE, MAX_PAGE)


def one_of(name: str, choices: tuple[str, ...], *, form: bool = False) -> str | None:
    """The query's ``name``, one of ``choices`` (None when absent, or empty from a
    ``form``)."""
    text = form_value(name) if form else request.args.get(name)
    if text is not None and text not in choices:
        raise InvalidInputError(f"{name} must be one of {', '.join(choices)}", "invalid_query")
    return text


def optional_time(name: str) -> int | None:
    """The query's ``name`` as an RFC 3339 instant (Unix ns), or None when absent."""
    text = request.args.get(name)
    return None if text is None else parse_timestamp(name, text, "invalid_query")
