"""The rules a request meets before its view, written once for the Flask views and the fast
path: the role's token, readiness, the read rate, and the body's size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_monitor.domain.errors import RateLimitedError
from fleet_monitor.http.connections import client_key
from fleet_monitor.http.errors import NotLoadedError, TokenRequiredError, body_too_large
from fleet_monitor.http.guard import READ, Access, RateLimiter
from fleet_monitor.http.readiness import Readiness

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


class Admission:
    """Whether a request may reach its view: :meth:`admit` raises when not."""

    def __init__(
        self, access: Access, readiness: Readiness, read_limiter: RateLimiter | None = None
    ) -> None:
        self.access, self.readiness, self.read_limiter = access, readiness, read_limiter

    def admit(self, environ: WSGIEnvironment, role: str, *, public: bool = False) -> bool:
        """Raise TokenRequiredError (401) without the role's token (unless ``public``: the
        request is let through, to see what is public), NotLoadedError (503) before the fleet
        is loaded, RateLimitedError (429) for a client reading too fast. Return whether the
        request had the role's token (or the role needs none)."""
        allowed = self.access.allows(environ, role)
        if not allowed and (not public or "HTTP_AUTHORIZATION" in environ):
            raise TokenRequiredError(role)  # a wrong credential is refused, public or not
        if not self.readiness.is_loaded:
            raise NotLoadedError
        limiter = self.read_limiter
        if role != READ or limiter is None:
            return allowed
        if (wait := limiter.take(client_key(environ.get("REMOTE_ADDR") or ""))) > 0:
            raise RateLimitedError(
                wait,
                f"too many reads from this client: at most {limiter.rate:g} a second, "
                f"{limiter.burst} at once",
            )
        return allowed


def read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """The request body; raises BodyTooLargeError (413) when it is larger than ``limit``."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length.isascii() and length.isdigit():
        if int(length) > limit:
            raise body_too_large(limit)
        return bytes(stream.read(int(length)))
    body = bytes(stream.read(limit + 1))  # no length given: read just past the limit
    if len(body) > limit:
        raise body_too_large(limit)
    return body
