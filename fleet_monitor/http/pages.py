"""The status pages, server-rendered with Jinja (no CDN, no build chain; a few lines of plain JS
sort the table): ``GET /`` the fleet, ``GET /status/<key:value>`` one group, ``GET
/devices/<id>`` one device.

With ``--read-token``, a page needs it (a browser is asked for it: any user name, the token as
password); with ``--public-status`` too, a request without it sees only the devices that
selector allows (any other device is a 404), as a status page for the public.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from flask import Blueprint, render_template, request

from fleet_monitor.domain.errors import InvalidInputError
from fleet_monitor.domain.profiles import parse_selector
from fleet_monitor.domain.readmodels import STATES, device_page, device_view, fleet_summary
from fleet_monitor.domain.statuspage import (
    BAR_BUCKETS,
    BAR_STEPS,
    DEFAULT_BAR_STEP,
    UPTIME_WINDOWS,
    device_rows,
    device_story,
)
from fleet_monitor.http.context import context
from fleet_monitor.http.page_format import install_filters
from fleet_monitor.http.queries import (
    decode_cursor,
    encode_cursor,
    one_of,
    whole_number,
)
from fleet_monitor.http.scope import scope

PAGE_ROWS = 50  # devices a page lists by default (at most MAX_ROWS)
MAX_ROWS = 500
DEFAULT_REFRESH_S = 60  # the page reloads itself (0: never)
MAX_REFRESH_S = 3600
DEVICE_STEPS = 100  # what a device page spends of the read budget (30 days, a bar's steps)
ROW_STEPS = BAR_BUCKETS + 3  # what a listed device spends: its bar's steps, its 3 windows

pages = Blueprint("pages", __name__)
install_filters(pages)


def _bar() -> str:
    """``?bar=``: the heartbeat bar's step."""
    return one_of("bar", BAR_STEPS, form=True) or DEFAULT_BAR_STEP


def _refresh() -> int:
    text = request.args.get("refresh")
    return (
        0 if text == "0" else whole_number("refresh", DEFAULT_REFRESH_S, MAX_REFRESH_S, form=True)
    )


def _labels() -> list[str]:
    """The page's ``label=`` filters (empty form fields left out)."""
    return [text for text in request.args.getlist("label") if text]


def _selector(extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    """The scope's selector with the page's ``label=`` filters and ``extra``."""
    return scope().within(extra, parse_selector(_labels()))


def _with_query(**changes: str) -> str:
    """This page's URL (its path encoded again) with ``changes`` to its query."""
    query = request.args.copy()
    for name, value in changes.items():
        query[name] = value
    return f"{quote(request.path, safe='/:')}?{urlencode(list(query.items(multi=True)))}"


def _render(template: str, **values: object) -> str:
    """``template`` with ``values`` and what every page shows: the bar's steps and length,
    the uptime windows, the refresh, whether this is the public status."""
    return render_template(
        template,
        bar_steps=BAR_STEPS,
        buckets=BAR_BUCKETS,
        windows=UPTIME_WINDOWS,
        refresh=_refresh(),
        public=scope().public,
        **values,
    )


def _fleet(title: str, group: tuple[tuple[str, str], ...] = ()) -> str:
    ctx = context()
    now = ctx.clock()
    state = one_of("state", STATES, form=True)
    bar = _bar()
    rows = whole_number("limit", PAGE_ROWS, MAX_ROWS, form=True)
    cursor = request.args.get("cursor")
    selector = _selector(group)
    if selector:
        with ctx.reads.spend(ctx.reads.steps):  # it reads every device: one at a time
            summary = fleet_summary(ctx.store, now, ctx.expectations, selector)
    else:
        summary = ctx.summaries.get()  # shared by concurrent requests
    views, last = device_page(
        ctx.store,
        now,
        ctx.expectations,
        status=None,
        state=state,
        selector=selector,
        after=None if cursor is None else decode_cursor(cursor),
        limit=rows,
    )
    with ctx.reads.spend(min(len(views) * ROW_STEPS, ctx.reads.steps)):
        listed = device_rows(ctx.store, views, now, bar)
    return _render(
        "fleet.html",
        title=title,
        summary=summary,
        rows=listed,
        now_ns=now,
        states=STATES,
        state=state,
        labels=_labels(),
        bar=bar,
        next_url=None if last is None else _with_query(cursor=encode_cursor(last)),
        limit=rows,
    )


@pages.get("/")
def fleet_page() -> str:
    """The fleet: its states, and its devices a page at a time."""
    return _fleet("Fleet")


@pages.get("/status/<path:group>")
def group_page(group: str) -> str:
    """One group (``key:value``): the fleet page of its devices."""
    try:
        (pair,) = parse_selector([group])
    except (InvalidInputError, ValueError):
        raise InvalidInputError(
            f"a group is key:value, the key a label key; got {group!r}", "invalid_query"
        ) from None
    return _fleet(f"{pair[0]}: {pair[1]}", (pair,))


@pages.get("/devices/<device_id>")
def device_page_view(device_id: str) -> str:
    """One device: its state, uptimes, heartbeat bar, outages, upload times and maintenance
    windows (a 404 for a device outside the scope)."""
    ctx = context()
    now = ctx.clock()
    view = device_view(ctx.store, device_id, now, ctx.expectations)
    scope().check(view.snapshot)
    bar = _bar()
    with ctx.reads.spend(min(DEVICE_STEPS, ctx.reads.steps)):
        story = device_story(ctx.store, view, now, bar)
    return _render("device.html", title=device_id, story=story, now_ns=now, bar=bar)
