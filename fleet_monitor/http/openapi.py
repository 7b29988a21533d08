"""The service's OpenAPI 3.1 document, kept as YAML in the package and served as JSON."""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import yaml

from fleet_monitor import __version__


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The parsed document, with ``info.version`` set to the package's version."""
    text = files("fleet_monitor.http").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    document["info"]["version"] = __version__
    return document
