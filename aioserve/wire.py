"""Byte-level HTTP/1.1 output: status lines, header blocks, chunk framing.

Everything that does not depend on the request is computed once, at import or once a second
(``HeaderClock``), so the per-response path is a join of ready-made byte strings.
"""
from __future__ import annotations

import asyncio
import http
import re
import time
from email.utils import formatdate

REASONS: dict[int, str] = {s.value: s.phrase for s in http.HTTPStatus}
REASONS.setdefault(425, "Too Early")

# Final statuses only: a 1xx is interim (100 Continue is the server's own, CONTINUE_100), and a client
# takes a 1xx sent as an answer for an interim one, then the next request's answer for this one's.
STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode("latin-1")) for code, phrase in REASONS.items()
    if code >= 200
}

#: Statuses whose responses never carry a body or body framing headers (RFC 9110 6.4.1).
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))

TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
OCTET_TYPE = "application/octet-stream"

# Heads for the common handler results: status line and content type in one piece.
TEXT_LINE = b"Content-Type: text/plain; charset=utf-8\r\n"
JSON_LINE = b"Content-Type: application/json\r\n"
OCTET_LINE = b"Content-Type: application/octet-stream\r\n"
TEXT_200 = STATUS_LINES[200] + TEXT_LINE
JSON_200 = STATUS_LINES[200] + JSON_LINE
OCTET_200 = STATUS_LINES[200] + OCTET_LINE
NO_CONTENT = STATUS_LINES[204]
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        if not 200 <= status <= 599:  # RFC 9110 15: 100-599, and a 1xx is never an answer
            raise ValueError(f"{status} is not a final HTTP status (200-599)")
        line = b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown").encode("latin-1"))
    return line


# The Content-Length line, alone and with the blank line ending the head, ready-made for the small
# bodies most answers have (a list index instead of formatting an int per response; about 70 KB).
READY_LENGTHS = 1024  # bodies shorter than this have their lines ready-made
CONTENT_LENGTHS = [b"Content-Length: %d\r\n" % n for n in range(READY_LENGTHS)]
END_OF_HEADS = [line + b"\r\n" for line in CONTENT_LENGTHS]


def content_length(n: int) -> bytes:
    return CONTENT_LENGTHS[n] if n < READY_LENGTHS else b"Content-Length: %d\r\n" % n


def end_of_head(size: int) -> bytes:
    """The Content-Length line for a body of ``size`` bytes and the blank line after it."""
    return END_OF_HEADS[size] if size < READY_LENGTHS else b"Content-Length: %d\r\n\r\n" % size


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def check_header(name: str, value: str) -> None:
    """Refuse what could split a response: names must be tokens, values free of CR, LF and controls."""
    if not _TOKEN.match(name):
        raise ValueError(f"invalid response header name {name!r}")
    if _BAD_VALUE.search(value):
        raise ValueError(f"invalid character (CR, LF or control) in response header {name!r}")


class HeaderClock:
    """The ``Date`` and ``Server`` lines (plus the connection lines) rebuilt once a second.

    ``keep_alive``, ``keep_alive_10`` and ``close`` are the tails every response ends its head with,
    for an HTTP/1.1 keep-alive, HTTP/1.0 keep-alive and closing connection respectively.
    """

    __slots__ = ("_server", "_keep_alive_line", "keep_alive", "keep_alive_10", "close", "_handle")

    def __init__(self, server_header: str | None, keep_alive_timeout: float | None) -> None:
        self._server = b"" if not server_header else b"Server: %s\r\n" % server_header.encode("latin-1")
        if keep_alive_timeout:
            self._keep_alive_line = b"Keep-Alive: timeout=%d\r\n" % int(keep_alive_timeout)
        else:
            self._keep_alive_line = b""
        self._handle: asyncio.TimerHandle | None = None
        self.refresh()

    def refresh(self) -> None:
        date = b"Date: %s\r\n" % formatdate(usegmt=True).encode("ascii")
        common = date + self._server
        self.keep_alive = common + self._keep_alive_line
        self.keep_alive_10 = common + b"Connection: keep-alive\r\n" + self._keep_alive_line
        self.close = common + b"Connection: close\r\n"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def tick() -> None:
            self.refresh()
            self._handle = loop.call_later(1.002 - time.time() % 1.0, tick)  # just past the second: uvloop's ms timers may fire early

        self.refresh()
        self._handle = loop.call_later(1.002 - time.time() % 1.0, tick)  # just past the second: uvloop's ms timers may fire early

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
