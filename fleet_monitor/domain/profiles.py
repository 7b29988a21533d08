"""A device's profile: its labels and its own heartbeat expectations, and label selectors.

Labels are a small string map (``site: paris``) for filtering and grouping; ``expected_every``
and ``grace`` (seconds) override the fleet's ``--expected-every`` and ``--grace`` for one device.
A profile is bounded (:data:`MAX_LABELS` labels of short keys and values), so it costs a device
at most a few kilobytes wherever it is kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from fleet_monitor.domain.errors import InvalidInputError

MAX_LABELS = 16
MAX_VALUE = 128
MAX_SECONDS = 366 * 86400  # a year and a day
LABEL_KEY = re.compile(r"[a-z][a-z0-9_.-]{0,62}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEY_RULE = "1 to 63 characters of a-z 0-9 _ . -, starting with a letter"
_FIELDS = ("labels", "expected_every", "grace")


@dataclass(frozen=True)
class Profile:
    """Labels (sorted by key) and the device's own expectations in seconds (None: the
    fleet's)."""

    labels: tuple[tuple[str, str], ...] = ()
    expected_every_s: int | None = None
    grace_s: int | None = None
    from_file: bool = False  # set from the devices file's columns (not by the API)
    by_api: bool = False  # set through the API (even empty: the devices file leaves it be)

    def label(self, key: str) -> str | None:
        """The value of label ``key``, or None."""
        for name, value in self.labels:
            if name == key:
                return value
        return None

    def matches(self, selector: tuple[tuple[str, str], ...]) -> bool:
        """Whether every ``(key, value)`` of ``selector`` is one of the labels."""
        return all(pair in self.labels for pair in selector)

    def to_json(self) -> str:
        """The profile as compact JSON ("" for the empty profile), for storage."""
        if self == EMPTY:
            return ""
        fields: dict[str, Any] = {"file": True} if self.from_file else {}  # first: see FILE_MARK
        if self.by_api:
            fields["api"] = True
        fields["labels"] = dict(self.labels)
        if self.expected_every_s is not None:
            fields["expected_every"] = self.expected_every_s
        if self.grace_s is not None:
            fields["grace"] = self.grace_s
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)

    @staticmethod
    def from_json(text: str | None) -> Profile:
        """The profile :meth:`to_json` wrote (unchecked: it was valid when stored)."""
        if not text:
            return EMPTY
        fields = json.loads(text)
        return Profile(
            tuple(sorted(fields.get("labels", {}).items())),
            fields.get("expected_every"),
            fields.get("grace"),
            bool(fields.get("file")),
            bool(fields.get("api")),
        )


EMPTY = Profile()


@dataclass(frozen=True)
class ExpectationRule:
    """``--expect``: devices with the labels of ``selector`` and no expectations of their own
    are expected every ``expected_every_s`` seconds, with ``grace_s`` (None: the fleet's)."""

    selector: tuple[tuple[str, str], ...]
    expected_every_s: int
    grace_s: int | None


FILE_MARK = '{"file":true'  # how the JSON of a profile from the devices file begins


def _seconds(fields: dict[str, Any], name: str, least: int) -> int | None:
    value = fields[name]
    if value is None:
        return None
    if type(value) is not int or not least <= value <= MAX_SECONDS:
        raise InvalidInputError(
            f"{name} must be null or a whole number of seconds from {least} to {MAX_SECONDS}",
            "invalid_field",
        )
    return value


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise InvalidInputError("labels must be an object of strings", "invalid_field")
    if len(value) > MAX_LABELS:
        raise InvalidInputError(f"a device has at most {MAX_LABELS} labels", "invalid_field")
    for key, text in value.items():
        if not LABEL_KEY.fullmatch(key):
            raise InvalidInputError(f"label {key!r}: a key is {_KEY_RULE}", "invalid_field")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_VALUE or _CONTROL.search(text):
            raise InvalidInputError(
                f"label {key!r}: a value is a string of 1 to {MAX_VALUE} characters, none of "
                "them a control character",
                "invalid_field",
            )
    return tuple(sorted(value.items()))


def parse_profile(fields: dict[str, Any], current: Profile) -> Profile:
    """``current`` changed by a ``PUT`` body's fields: ``labels`` (replaces them all),
    ``expected_every`` and ``grace`` (null: back to the fleet's). Raises InvalidInputError
    for an unknown field or a bad value."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise InvalidInputError(
            f"unknown field {unknown[0]!r}: a device takes {', '.join(_FIELDS)}", "invalid_field"
        )
    profile = replace(current, from_file=False, by_api=True)  # the file leaves it be now
    if "labels" in fields:
        profile = replace(profile, labels=_labels(fields["labels"]))
    if "expected_every" in fields:
        profile = replace(profile, expected_every_s=_seconds(fields, "expected_every", 1))
    if "grace" in fields:
        profile = replace(profile, grace_s=_seconds(fields, "grace", 0))
    return profile


def file_profile(path_line: str, row: dict[str, str]) -> Profile:
    """The profile a devices file's row gives (``row``: its columns other than ``device_id``,
    empty cells left out): ``expected_every`` and ``grace`` in seconds, the rest labels.
    Raises InvalidInputError naming ``path_line``. A row of empty cells gives none."""
    if not row:
        return EMPTY
    fields: dict[str, Any] = {"labels": {}}
    for column, text in row.items():
        if column in ("expected_every", "grace"):
            if not (text.isascii() and text.isdigit() and len(text) <= 9):
                raise InvalidInputError(f"{path_line}: {column} must be whole seconds", "file")
            fields[column] = int(text)
        else:
            fields["labels"][column] = text
    try:
        profile = parse_profile(fields, EMPTY)
    except InvalidInputError as error:
        raise InvalidInputError(f"{path_line}: {error}", "file") from None
    return replace(profile, from_file=True, by_api=False)


def parse_selector(texts: list[str]) -> tuple[tuple[str, str], ...]:
    """``?label=key:value`` (repeated: all must match) as ``(key, value)`` pairs."""
    pairs = []
    for text in texts:
        key, colon, value = text.partition(":")
        if not colon or not LABEL_KEY.fullmatch(key) or not value:
            raise InvalidInputError(
                f"label must be key:value, the key {_KEY_RULE}; got {text!r}", "invalid_query"
            )
        pairs.append((key, value))
    return tuple(pairs)


def parse_label_key(text: str) -> str:
    """A ``group_by`` label key."""
    if not LABEL_KEY.fullmatch(text):
        raise InvalidInputError(f"group_by must be a label key: {_KEY_RULE}", "invalid_query")
    return text
