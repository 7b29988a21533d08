"""The Valkey engine as the store uses it: URLs, which errors mean "unavailable", and a
connection per thread for the write scripts.

An engine that cannot be reached, is loading or does not answer within the timeout raises one
of :data:`ENGINE_ERRORS`; one that refuses writes for now (out of memory, an AOF it cannot
write, a replica, a busy script) answers an error that :func:`is_refusal` recognises. Both are
503s (:class:`EngineUnavailableError`), never 500s. Nothing is retried: a write whose reply
was lost may have been applied.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from redis.commands.core import Script
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from fleet_monitor.domain.errors import StoreUnavailableError

IDLE_CHECK_S = 1.0  # a write connection idle this long is checked before it is used
ENGINE_ERRORS = (ConnectionError, TimeoutError, BusyLoadingError, OSError)


class EngineUnavailableError(StoreUnavailableError):
    """The engine cannot be reached, is loading its data, or did not answer in time (503)."""

    retry_after = 1

    def sentence(self) -> str:
        """What the client is told."""
        return f"the store is unavailable: {self}; nothing is lost, try again shortly"


_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")  # the password of user:password@


def engine_url(url: str) -> str:
    """``url`` as redis-py takes it: ``valkey://`` and ``valkeys://`` mean ``redis://`` and
    ``rediss://``."""
    scheme, sep, rest = url.partition("://")
    return {"valkey": "redis", "valkeys": "rediss"}.get(scheme, scheme) + sep + rest


def check_url(url: str) -> None:
    """Raise ValueError naming what is wrong with a store URL the engine's client cannot
    use: a port that is not a number, a bad option, a ``unix://`` without a socket path, a
    database that is not a number from 0."""
    try:
        pool = redis.ConnectionPool.from_url(engine_url(url))
        pool.make_connection()
    except (ValueError, RedisError) as error:
        raise ValueError(f"{safe_url(url)}: {error}") from None
    options = pool.connection_kwargs
    if url.startswith("unix:") and not options.get("path"):
        raise ValueError(f"{url} names no socket path, like unix:///run/valkey.sock")
    named_db = urlsplit(url).path.strip("/") if not url.startswith("unix:") else ""
    db = options.get("db", 0)
    if (named_db and "db" not in options) or not isinstance(db, int) or db < 0:
        raise ValueError(f"{safe_url(url)}: the database must be a number from 0, as in /0")


def safe_url(url: str) -> str:
    """``url`` without its password, for messages and logs (whatever else it holds)."""
    return _PASSWORD.sub(r"\1***@", url)


class ThreadConnections:
    """One engine connection per thread for the write scripts, kept for the thread's life:
    no pool to go through and no health-check PING (a write costs about half the client CPU
    of a pooled call). A call that does not end with its whole reply read closes the
    connection, so no reply is ever left for the next call. A connection idle for a second or
    more is checked before it is used: one the engine has closed (a restart) is opened again;
    the next call after a failure reconnects."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._local = threading.local()
        self._opened: list[redis.connection.AbstractConnection] = []  # for close()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.disconnect()  # type: ignore[no-untyped-call]

    def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA ``script`` (loaded first if the engine has lost it: NOSCRIPT is never run)."""
        connection = self._connection()
        with self._whole_replies(connection):
            try:
                return self._send(connection, "EVALSHA", script.sha, len(keys), *keys, *args)
            except NoScriptError:
                self._send(connection, "SCRIPT", "LOAD", script.script)
                return self._send(connection, "EVALSHA", script.sha, len(keys), *keys, *args)

    def run_many(self, writes: Sequence[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each of ``writes`` in one pipeline; their answers in order (an error
        reply as its exception). Scripts the engine has lost are loaded first."""
        connection = self._connection()
        commands = [
            ("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in writes
        ]
        with self._whole_replies(connection):
            answers = self._pipeline(connection, commands)
            lost = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
            if lost:  # never run: load the scripts, then run those again
                for script in {writes[i][0].sha: writes[i][0] for i in lost}.values():
                    self._send(connection, "SCRIPT", "LOAD", script.script)
                for i, answer in zip(
                    lost, self._pipeline(connection, [commands[i] for i in lost]), strict=True
                ):
                    answers[i] = answer
            return answers

    @contextmanager
    def _whole_replies(self, connection: redis.connection.AbstractConnection) -> Iterator[None]:
        """Close ``connection`` unless the block ends with every reply read (an error reply
        is read whole); note when it last did."""
        try:
            yield
        except ResponseError:
            self._local.used_at = time.monotonic()
            raise
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        self._local.used_at = time.monotonic()

    @staticmethod
    def _pipeline(
        connection: redis.connection.AbstractConnection, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        packed = connection.pack_commands(commands)  # type: ignore[no-untyped-call]
        connection.send_packed_command(packed, check_health=False)  # type: ignore[no-untyped-call]
        answers: list[Any] = []
        for _ in commands:
            try:
                answers.append(connection.read_response())
            except ResponseError as error:
                answers.append(error)
        return answers

    def _connection(self) -> redis.connection.AbstractConnection:
        local = self._local
        connection = getattr(local, "connection", None)
        if connection is None:
            pool = self._pool
            connection = pool.connection_class(**pool.connection_kwargs)
            local.connection, local.used_at = connection, -IDLE_CHECK_S
            with self._lock:
                self._opened.append(connection)
        if connection._sock is not None and time.monotonic() - local.used_at >= IDLE_CHECK_S:
            try:
                stale = connection.can_read(0)
            except ENGINE_ERRORS:  # closed by the engine
                stale = True
            if stale:  # closed by the engine, or it sent what nobody asked for: start afresh
                connection.disconnect()
        return cast(redis.connection.AbstractConnection, connection)

    @staticmethod
    def _send(connection: redis.connection.AbstractConnection, *command: Any) -> Any:
        connection.send_command(*command, check_health=False)  # type: ignore[no-untyped-call]
        return connection.read_response()


# Answers of an engine that cannot take writes now (out of memory, an AOF it cannot write, a
# replica, a script or a load in the way), or will not take ours (a database it does not have,
# a password or an ACL that refuses us): the write was refused before it began.
_REFUSALS = (
    "DB index",
    "NOAUTH",
    "WRONGPASS",
    "NOPERM",
    "OOM",
    "MISCONF",
    "READONLY",
    "BUSY",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "TRYAGAIN",
)


def is_refusal(error: ResponseError) -> bool:
    """Whether ``error`` says the engine cannot take the write now (503, retry), rather than
    that the write is wrong (a bug: 500)."""
    return isinstance(error, OutOfMemoryError | ReadOnlyError) or str(error).startswith(_REFUSALS)
