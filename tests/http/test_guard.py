"""The connection guard's rules on plain objects, and the listener surviving its own bugs
(the real process is in test_connections.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fleet_monitor.config import Settings
from fleet_monitor.http.connections import OVERFLOW, ConnectionGuard, client_key
from fleet_monitor.http.wsgi_server import GuardedServer, create_wsgi_server


@pytest.mark.parametrize(
    ("address", "key"),
    [
        (("203.0.113.7", 50000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 50000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 50001, 0, 0), "2001:db8:1:2::/64"),  # same /64, same client
        (("2001:db8:1:3::1", 50002, 0, 0), "2001:db8:1:3::/64"),
        (("::ffff:203.0.113.7", 50003, 0, 0), "203.0.113.7"),
        (("fe80::1%eth0", 50004, 0, 2), "fe80::/64"),
        (("localhost", None), "localhost"),  # a Unix socket's stand-in address
    ],
)
def test_client_key(address: tuple[object, ...], key: str) -> None:
    assert client_key(address) == key


@dataclass(eq=False)
class Conn:
    """A connection as the guard sees it."""

    rank: tuple[int, float] | None = None  # None: busy
    since: float | None = None
    pending_input: bool = False
    evicted: bool = False
    timed_out: bool = False
    owes: tuple[str, float] | None = None  # what the client owes beside headers, since when
    abandoned: bool = False
    sentence: str = ""

    def eviction_rank(self) -> tuple[int, float] | None:
        return None if self.evicted else self.rank

    def headers_awaited_since(self) -> float | None:
        return self.since

    def evict(self, force: bool = False) -> bool:
        if self.pending_input and not force:
            return False
        self.evicted = True
        return True

    def late_since(self) -> tuple[str, float] | None:
        return ("headers", self.since) if self.since is not None else self.owes

    def abandon(self) -> None:
        self.abandoned = True

    def time_out(self, sentence: str) -> None:
        self.timed_out, self.sentence = True, sentence


def test_idle_go_first_then_the_slowest_headers_never_the_busy() -> None:
    guard = ConnectionGuard(limit=100, per_client=4, header_timeout=5)
    busy, slow_old, slow_new, idle = Conn(), Conn((1, 10.0)), Conn((1, 20.0)), Conn((0, 99.0))
    for conn in (busy, slow_old, slow_new, idle):
        assert guard.admit(conn, "a") is None
    assert guard.admit(Conn(), "a") is None
    assert [c.evicted for c in (busy, slow_old, slow_new, idle)] == [False, False, False, True]
    assert guard.admit(Conn(), "a") is None
    assert [c.evicted for c in (busy, slow_old, slow_new)] == [False, True, False]
    assert guard.admit(Conn((0, 1.0), pending_input=True), "b") is None  # another client
    assert guard.open == 5


def test_an_idle_connection_with_a_request_arriving_is_kept() -> None:
    guard = ConnectionGuard(limit=100, per_client=2, header_timeout=5)
    arriving, idle = Conn((0, 1.0), pending_input=True), Conn((0, 2.0))
    guard.admit(arriving, "a")
    guard.admit(idle, "a")
    assert guard.admit(Conn(), "a") is None
    assert (arriving.evicted, idle.evicted) == (False, True)


def test_all_busy_means_a_spare_slot_then_none() -> None:
    guard = ConnectionGuard(limit=100, per_client=1, header_timeout=5)
    guard.admit(Conn(), "a")
    spares = [Conn() for _ in range(OVERFLOW)]
    for conn in spares:
        assert guard.admit(conn, "a") == "too many connections from a: at most 1, all busy"
    last = Conn(pending_input=True)
    assert guard.admit(last, "a") == "too many connections from a: at most 1, all busy"
    assert last.evicted  # closed at once, even with its request arriving
    guard.release(spares[0])
    assert guard.admit(Conn(), "a") is not None  # a spare slot again, not a slot of its own
    assert guard.open == 1


def test_the_global_limit_evicts_one_percent_at_a_time() -> None:
    guard = ConnectionGuard(limit=200, per_client=200, header_timeout=5)
    conns = [Conn((0, float(n))) for n in range(200)]
    for conn in conns:
        guard.admit(conn, f"c{len(conns) % 7}")
    assert guard.admit(Conn(), "new") is None
    assert [n for n, conn in enumerate(conns) if conn.evicted] == [0, 1]  # 1 % of 200
    assert guard.open == 199


def test_sweep_times_out_late_headers_and_runs_once_for_all_listeners() -> None:
    now = [100.0]
    guard = ConnectionGuard(limit=10, per_client=10, header_timeout=2, clock=lambda: now[0])
    late, fresh, waiting = Conn(since=97.9), Conn(since=99.0), Conn(since=None)
    for conn in (late, fresh, waiting):
        guard.admit(conn, "a")
    assert guard.sweep() == 1
    assert (late.timed_out, fresh.timed_out, waiting.timed_out) == (True, False, False)
    assert guard.sweep() == 0  # the second listener's call in the same turn
    now[0] = 101.0
    assert guard.sweep() == 2  # late again (it is closed by then in real life), and fresh


def test_an_error_while_accepting_is_logged_and_the_listener_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = create_wsgi_server(lambda environ, start_response: [], Settings(port=0))
    assert isinstance(server, GuardedServer)
    try:
        try:
            raise RuntimeError("a bug in admission")
        except RuntimeError:
            server.handle_error()  # what waitress's loop calls; its own would close the listener
        assert server.accepting
        assert server.socket is not None
        assert "unexpected error while accepting a connection" in caplog.messages
    finally:
        server.task_dispatcher.shutdown()
        server.close()


def test_a_late_body_gets_a_408_and_an_unread_answer_closes_its_connection() -> None:
    now = [100.0]
    guard = ConnectionGuard(
        limit=100, per_client=10, header_timeout=5, request_timeout=30, clock=lambda: now[0]
    )
    body_late = Conn(owes=("body", 70.0))  # headers at 70 s: 30 s ago
    body_ok = Conn(owes=("body", 71.0))
    unread = Conn(owes=("answer", 70.0))
    headers_late = Conn(since=95.0)  # 5 s ago
    for conn in (body_late, body_ok, unread, headers_late):
        guard.admit(conn, "a")
    assert guard.sweep() == 3
    assert (body_late.timed_out, body_late.sentence) == (
        True,
        "the request body did not arrive within 30 s",
    )
    assert headers_late.sentence == "the request headers did not arrive within 5 s"
    assert (body_ok.timed_out, body_ok.abandoned) == (False, False)
    assert (unread.abandoned, unread.timed_out) == (True, False)
