"""Reading the status pages in tests: a strict HTML5 parse, the rows of the device table,
and each inline SVG parsed as XML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import html5lib

XHTML = "{http://www.w3.org/1999/xhtml}"
SVG_OPEN = re.compile(r"<svg\b.*?</svg>", re.S)


def parse_page(html: str) -> ET.Element:
    """The page as a tree; raises on any HTML5 parse error (strict)."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
    tree: ET.Element = parser.parse(html)
    return tree


def device_rows(html: str) -> dict[str, str]:
    """The device table's rows: device id -> state."""
    tree = parse_page(html)
    rows = tree.iter(f"{XHTML}tr")
    return {
        row.get("data-device", ""): row.get("data-state", "")
        for row in rows
        if row.get("data-device")
    }


def svgs(html: str) -> list[ET.Element]:
    """Each inline ``<svg>`` of the page, parsed as XML (raises if one is not well formed)."""
    return [
        ET.fromstring(part.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))
        for part in SVG_OPEN.findall(html)
    ]
