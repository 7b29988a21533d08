"""Who may hold a connection: per-client and global caps, eviction, header deadlines.

A client connection holds a *slot*. There are ``limit`` slots in all and at most ``per_client``
per client address (an IPv6 client's whole /64, which one host usually owns). When a new
connection finds no slot, connections that are waiting on their client are closed to make
room, in this order:

1. idle ones (no request, nothing unsent), longest idle first: a keep-alive connection costs
   its client a reconnect, nothing more;
2. then those still sending their request headers, oldest first: a client's headers fit in one
   packet, so the oldest of these is the slowest client.

A connection that is busy (a request body arriving, a request queued, served or sent back) is
never closed. If every candidate is busy, the newcomer takes one of :data:`OVERFLOW` spare
slots: its request is answered 503 once parsed, unless it asks for ``/healthz`` or
``/readyz``, so probes get through a full server. A spare slot gets the header deadline for
its body too, and counts as slow until answered, so the oldest spare makes room for the next
newcomer; only when every spare's request is being answered is a newcomer closed at once.

At the global limit, the longest-waiting 1 % go together (at least one), so that a flood of
new connections costs one scan of all connections per 1 % of them rather than per connection.

Every slot is also bound in time, by :meth:`ConnectionGuard.sweep`: a connection whose request
headers are incomplete ``header_timeout`` seconds after it connected (first request) or after
the request's first byte (later ones), or whose request body is incomplete ``request_timeout``
seconds after its headers, is answered 408 and closed; one whose answer has been waiting to
leave for ``request_timeout`` seconds (a client that does not read) is closed, which frees the
worker blocked on it.

All of this runs on waitress's event-loop thread; a lock guards against the rare close from a
worker thread.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)

OVERFLOW = 32  # spare slots whose requests get a 503 (or a health answer)
_OVERFLOW_KEY = ""


HEADERS, BODY, ANSWER = "headers", "body", "answer"  # what a late connection is late with


class Connection(Protocol):
    """What the guard needs of a client connection (a waitress channel)."""

    def late_since(self) -> tuple[str, float] | None:
        """(HEADERS/BODY/ANSWER, since when) for what the client owes now, else None."""

    def abandon(self) -> None:
        """Close now, without an answer (the client is not reading)."""

    def eviction_rank(self) -> tuple[int, float] | None:
        """(0, idle since) or (1, headers awaited since) when it waits on its client; else None."""

    def headers_awaited_since(self) -> float | None:
        """Monotonic time since when request headers are awaited, None when none are."""

    def evict(self, force: bool = False) -> bool:
        """Close it soon, unless data arrived meanwhile and not ``force`` (then False)."""

    def time_out(self, sentence: str) -> None:
        """Answer 408 with ``sentence`` and close."""


def client_key(address: Any) -> str:
    """The client a peer address belongs to: the IPv4 address, or the IPv6 address's /64."""
    host = str(address[0] if isinstance(address, tuple) else address)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return host


class ConnectionGuard:
    """Slots for client connections; see the module's docstring for the rules."""

    def __init__(
        self,
        limit: int,
        per_client: int,
        header_timeout: float,
        request_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.per_client = per_client
        self.header_timeout, self.request_timeout = header_timeout, request_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._groups: dict[str, set[Connection]] = {}  # client key -> its connections
        self._overflow: set[Connection] = set()
        self._slot: dict[Connection, str] = {}  # connection -> its client key, or overflow
        self._batch = max(1, limit // 100)
        self._next_sweep = -float("inf")

    @property
    def open(self) -> int:
        """Connections holding a slot (not counting the spare ones)."""
        return len(self._slot) - len(self._overflow)

    def admit(self, conn: Connection, key: str) -> str | None:
        """Give ``conn`` (from client ``key``) a slot, evicting others if needed.

        Returns None when it has one; otherwise the sentence its request will be refused with
        (it holds a spare slot, or has been evicted itself when there is none).
        """
        with self._lock:
            group = self._groups.get(key, set())
            if len(group) >= self.per_client and not self._evict(group, 1):
                return self._spare(
                    conn, f"too many connections from {key}: at most {self.per_client}, all busy"
                )
            if self.open >= self.limit:
                evicted = self._evict(itertools.chain(*self._groups.values()), self._batch)
                if not evicted:
                    return self._spare(
                        conn, f"the service has {self.limit} connections open, all busy"
                    )
                log.warning(
                    "at the connection limit (%d): closed %d idle or slow connections",
                    self.limit,
                    evicted,
                )
            self._groups.setdefault(key, set()).add(conn)
            self._slot[conn] = key
            return None

    def release(self, conn: Connection) -> None:
        """Forget ``conn`` (closed); a connection the guard does not hold is ignored."""
        with self._lock:
            self._forget(conn)

    def sweep(self) -> int:
        """Time out the connections late with their headers, body or reading (see the module's
        docstring); returns how many.

        waitress calls it from each listener's cleanup, once a second: a second call within
        half a second (another listener's) does nothing.
        """
        now = self._clock()
        if now < self._next_sweep:
            return 0
        self._next_sweep = now + 0.5
        with self._lock:
            owed = [(conn, owing) for conn in self._slot if (owing := conn.late_since())]
        late = [
            (conn, what)
            for conn, (what, since) in owed
            if now - since >= (self.header_timeout if what == HEADERS else self.request_timeout)
        ]
        for conn, what in late:
            if what == ANSWER:
                conn.abandon()
            else:
                limit = self.header_timeout if what == HEADERS else self.request_timeout
                conn.time_out(f"the request {what} did not arrive within {limit:g} s")
        if late:
            log.warning(
                "timed out %d connections late with their request headers (over %g s), body "
                "or reading of the answer (over %g s)",
                len(late),
                self.header_timeout,
                self.request_timeout,
            )
        return len(late)

    def _spare(self, conn: Connection, refusal: str) -> str:
        if len(self._overflow) >= OVERFLOW and not self._evict(self._overflow, 1):
            conn.evict(force=True)
            log.warning("no slot, not even a spare one: closed a new connection (%s)", refusal)
            return refusal
        self._overflow.add(conn)
        self._slot[conn] = _OVERFLOW_KEY
        log.warning("a connection took a spare slot, its request gets a 503: %s", refusal)
        return refusal

    def _evict(self, candidates: Iterable[Connection], count: int) -> int:
        """Close up to ``count`` of ``candidates`` that wait on their clients, longest first."""
        ranked = [(rank, conn) for conn in candidates if (rank := conn.eviction_rank())]
        evicted = 0
        for _, conn in heapq.nsmallest(count + 8, ranked, key=lambda pair: pair[0]):
            if evicted == count:
                break
            if conn.evict():
                self._forget(conn)
                evicted += 1
        return evicted

    def _forget(self, conn: Connection) -> None:
        key = self._slot.pop(conn, None)
        if key is None:
            return
        if key == _OVERFLOW_KEY:
            self._overflow.discard(conn)
            return
        group = self._groups[key]
        group.discard(conn)
        if not group:
            del self._groups[key]
