"""What waitress refuses before the app sees it is answered in the service's JSON, too."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from waitress.adjustments import Adjustments
from waitress.utilities import BadRequest

from fleet_monitor.http.waitress_errors import describe
from tests.conftest import LiveServer, live_server
from tests.support.rawhttp import connect, read_all

CHUNK = b"100000\r\n" + b"a" * 0x100000 + b"\r\n"  # 1 MiB
CASES = [
    (
        "huge-header",
        b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
        "HTTP/1.0 431 Request Header Fields Too Large",
        "the request line and headers are larger than 262144 bytes",
    ),
    (
        "huge-path",
        b"GET /" + b"a" * 300_000 + b" HTTP/1.1\r\n\r\n",
        "HTTP/1.0 431 Request Header Fields Too Large",
        "the request line and headers are larger than 262144 bytes",
    ),
    (
        "bad-header",
        b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n",
        "HTTP/1.0 400 Bad Request",
        "a header line is not a valid NAME: VALUE pair",
    ),
    (
        "bad-content-length",
        b"POST /healthz HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        "HTTP/1.1 400 Bad Request",
        "Content-Length must be a single whole number of bytes",
    ),
    (
        "duplicate-content-length",
        b"POST /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "HTTP/1.1 400 Bad Request",
        "Content-Length must be a single whole number of bytes",
    ),
    (
        "bad-chunk-size",
        b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 400 Bad Request",
        "a chunk size of the chunked body is not a hexadecimal number",
    ),
    (
        "raw-utf8-uri",
        "GET /api/v1/devices/caméra/stats HTTP/1.1\r\n\r\n".encode(),
        "HTTP/1.1 400 Bad Request",
        "the request target is not a valid URI: percent-encode any non-ASCII character",
    ),
    (
        "lower-case-method",
        b"get /healthz HTTP/1.1\r\n\r\n",
        "HTTP/1.0 400 Bad Request",
        "the method is not valid: methods are case-sensitive, e.g. GET",
    ),
    (
        "not-http",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain-HTTP port
        "HTTP/1.0 400 Bad Request",
        "the request line must be METHOD TARGET HTTP/1.1",
    ),
    (
        "body-over-waitress-limit",
        b"POST /api/v1/events HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
        "HTTP/1.1 413 Request Entity Too Large",
        "request body is larger than 1560575 bytes",
    ),
    (
        "chunked-body-over-waitress-limit",
        b"POST /api/v1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNK * 2,
        "HTTP/1.1 413 Request Entity Too Large",
        "request body is larger than 1560575 bytes",
    ),
    (
        "gzip-transfer-encoding",
        b"POST /api/v1/events HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 501 Not Implemented",
        "only Transfer-Encoding: chunked is supported; send other bodies with Content-Length",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("errors")) as running:
        yield running


@pytest.mark.parametrize(
    ("request_bytes", "status_line", "msg"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_waitress_refusals_are_json(
    server: LiveServer, request_bytes: bytes, status_line: str, msg: str
) -> None:
    with connect(server.url) as sock:
        sock.sendall(request_bytes)
        data = read_all(sock)  # the answer, then the server closes
    head, _, body = data.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert first == status_line
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {"msg": msg}
    assert body == json.dumps({"msg": msg}, separators=(",", ":")).encode() + b"\n"
    assert len(headers["X-Request-Id"]) == 32


def test_each_refusal_has_an_access_line(server: LiveServer) -> None:
    with connect(server.url) as sock:
        sock.sendall(
            b"POST /healthz?x=1 HTTP/1.1\r\nContent-Length: x\r\nX-Request-ID: e-1\r\n\r\n"
        )
        assert b"X-Request-Id: e-1\r\n" in read_all(sock)
    [line] = [line for line in server.log_lines() if line.get("request_id") == "e-1"]
    assert line["logger"] == "fleet_monitor.access"
    assert (line["method"], line["path"], line["query"]) == ("POST", "/healthz", "x=1")
    assert (line["route"], line["status"], line["remote_addr"]) == (None, 400, "127.0.0.1")


def test_a_refusal_waitress_may_add_later_still_reads_as_a_sentence() -> None:
    error = BadRequest("Header name too exotic")
    assert describe(error, Adjustments()) == "the request is not valid HTTP: Header name too exotic"
