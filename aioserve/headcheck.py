"""The checks a request head must pass, as the connection parses it (RFC 9110, RFC 9112).

The few header fields that decide framing or routing (Host, Transfer-Encoding, Content-Length,
Connection, Expect, Upgrade) are checked once, as they arrive; what each has said is kept as bits of
one integer, so starting a new request resets them with a single store. Anything that could smuggle
a request (a Transfer-Encoding that does not end in chunked, a malformed length) is refused here.
"""
from __future__ import annotations

import re

import httptools

from .errors import ProtocolError

# What the head being parsed has said, as bits (the connection keeps them in one int per head).
HOST_SEEN, CONNECTION_SEEN, CHUNKED_BODY, EXPECT_CONTINUE, UPGRADE, HAS_LENGTH = 1, 2, 4, 8, 16, 32
CHECKED_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-length", b"connection"})
METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
# RFC 9110 7.2 / RFC 3986: reg-name or IPv4, or an IP literal in brackets, and an optional port.
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._~-]+)?\])(?::[0-9]{0,5})?\Z")


def check_host(value: bytes) -> None:
    if not _HOST.match(value):
        raise ProtocolError(400, "Invalid Host header")


def check_header(name: bytes, value: bytes) -> int:
    """Check one of ``CHECKED_HEADERS``; returns the bit it sets."""
    if name == b"transfer-encoding":
        codings = [c.strip() for c in value.lower().split(b",")]
        if codings[-1] != b"chunked":
            raise ProtocolError(400, "Transfer-Encoding must end with chunked")
        if len(codings) > 1:
            raise ProtocolError(501, "Only the chunked transfer coding is supported")
        return CHUNKED_BODY
    if name == b"content-length":
        if not value.isdigit():
            raise ProtocolError(400, "Invalid Content-Length")
        return HAS_LENGTH
    if name == b"connection":
        return CONNECTION_SEEN
    if name == b"expect":
        return EXPECT_CONTINUE if value.lower() == b"100-continue" else 0
    return UPGRADE  # b"upgrade"


def origin_form(url: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """Absolute-form (``http://host/path?q``) to origin-form; ``*`` (OPTIONS) stays as is.

    The target's authority replaces the Host field in ``headers`` (RFC 9112 3.2.2: the server MUST
    ignore Host then), so the handler sees the host the client named in the target."""
    if url == b"*":
        return url
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise ProtocolError(400, "Invalid request target") from None
    if parsed.userinfo is not None:  # RFC 9110 4.2.4: treat its presence as an error
        raise ProtocolError(400, "Invalid request target: userinfo is not allowed")
    host = parsed.host
    if host:
        authority = b"[%s]" % host if b":" in host else host  # an IPv6 literal lost its brackets
        if parsed.port is not None:
            authority += b":%d" % parsed.port
        check_host(authority)
        for index, (name, _) in enumerate(headers):
            if name == b"host":
                headers[index] = (name, authority)
                break
        else:  # HTTP/1.0 may omit Host
            headers.append((b"host", authority))
    path = parsed.path or b"/"
    return path + b"?" + parsed.query if parsed.query else path


def parser_reason(exc: Exception) -> str:
    text = str(exc) or "Malformed request"
    return f"Bad Request: {text}"


# -- the request line, examined only where llhttp is lenient or refuses (never on the common path) ----
# RFC 9110 5.6.2: a method is a token; llhttp refuses methods it does not know, so a valid token it
# refused is an unknown method (501), anything else a malformed request line (400).
_TOKEN_METHOD = re.compile(rb"[\r\n]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?: |\Z)")  # \Z: the read ended in it
# RFC 9110 6.2: HTTP/1.x with x > 1 is processed as HTTP/1.1 (llhttp refuses it).
_HIGHER_MINOR = re.compile(rb"[\r\n]*[A-Z]+ [^ ]+ HTTP/1\.([2-9])(?:\r|\Z)")  # llhttp stops at the digit


def unknown_method(data: bytes | bytearray, at: int) -> bool:
    """Whether the request line at ``data[at:]`` (llhttp refused its method) begins with a token."""
    return _TOKEN_METHOD.match(data, at) is not None


def as_http11(data: bytes | bytearray, at: int) -> bytes | None:
    """``data[at:]`` with the version of its first request line, HTTP/1.2 to 1.9, rewritten as
    HTTP/1.1; None when the line says something else."""
    found = _HIGHER_MINOR.match(data, at)
    if found is None:
        return None
    digit = found.start(1)
    return bytes(data[at:digit]) + b"1" + bytes(data[digit + 1:])


MALFORMED_LINE = "Malformed request line: one space between its parts (RFC 9112 3)"


def after_empty_lines(line: bytes | bytearray, at: int) -> int:
    """Where the request line at ``line[at:]`` really begins: past empty lines (CRLF), which RFC 9112
    2.2 lets a server ignore; llhttp also skips a bare CR or LF there, which is refused (400)."""
    while line.startswith(b"\r\n", at):
        at += 2
    if line[at] < 14:
        raise ProtocolError(400, MALFORMED_LINE)
    return at


def allow_all(routes: list) -> str:  # type: ignore[type-arg]
    """``Allow`` for ``OPTIONS *`` (RFC 9110 9.3.7): every method some route answers, and OPTIONS
    (HEAD too where a GET route answers it, as a 405's ``Allow`` says)."""
    methods = {"OPTIONS"}
    for route in routes:
        methods.update(route.methods)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


SIZE_LINE_ALLOWANCE = 20  # the chunk size itself (16 hex digits at most), BWS and CR


class ChunkLines:
    """Bounds the chunk-size lines of one chunked request body: size plus chunk extensions (RFC 9112
    7.1.1) at most ``limit_chunk_extension`` + ``SIZE_LINE_ALLOWANCE`` bytes per chunk, else 400.

    httptools calls ``on_chunk_header`` (a size line has ended) and ``on_chunk_complete`` (its data and
    CRLF have) but gives no positions, so the lines are measured from outside, on the read being
    parsed: a cursor follows the parser through it. A size line ends at the first LF after the cursor;
    the chunk's data that follows is as long as the body count grew meanwhile, and the CRLF after it
    ends at the next LF. The part of a size line (or, after the last chunk, of a trailer line) left
    unfinished at the end of a read is the bytes after its last LF, carried into the next read, as
    ``Connection._partial_line`` bounds header lines. Two short ``find`` calls per chunk; nothing of
    this runs for a request that is not chunked.

    Where the cursor's start is unknown (the head's own start was lost: behind a chunked body whose
    end could not be followed), the size lines wholly inside that one read are not measured; the
    unfinished line at its end still is, so what escapes is bounded by the size of one read.
    """
    __slots__ = ("limit", "trailer_limit", "data", "pos", "mark", "started", "carry", "in_line")

    def __init__(self, limit: int, trailer_limit: int, data: bytes, pos: int, received: int) -> None:
        self.limit = limit + SIZE_LINE_ALLOWANCE
        self.trailer_limit = trailer_limit
        self.data = data  # the read being parsed (b"" between reads)
        self.pos = pos  # where the parser is in ``data``: a size line's start; -1 when unknown
        self.mark = received  # body bytes counted when the cursor last moved
        self.started = received  # body bytes counted when the current chunk's size line ended
        self.carry = 0  # bytes of an unfinished line from earlier reads
        self.in_line = True  # a size line comes next (else a chunk's data, or the trailer section)

    def begin_read(self, data: bytes, received: int) -> None:
        self.data = data
        self.pos = 0
        self.mark = received

    def header(self, received: int) -> None:
        """A size line has ended: measure it (``ProtocolError`` 400 past the limit)."""
        pos = self.pos
        if pos >= 0:
            end = self.data.find(b"\n", pos)
            if self.carry + end - pos > self.limit:
                raise ProtocolError(400, "Chunk extensions too long")
            self.pos = end + 1
        self.carry = 0
        self.in_line = False
        self.mark = self.started = received

    def complete(self, received: int) -> bool:
        """A chunk (data and CRLF) is done; True for the last chunk (no data), which ends the body."""
        if received == self.started:  # only the last chunk has no data (RFC 9112 7.1)
            return True
        if self.pos >= 0:
            self.pos = self.data.find(b"\n", self.pos + received - self.mark) + 1
        self.in_line = True
        return False

    def message_end(self) -> int:
        """After the last chunk and its trailer section (llhttp reports that chunk complete only then):
        where the message ends in this read, or -1 when the cursor lost its place. The section ends with
        the first empty line; the line at the cursor may have begun in an earlier read (``carry``)."""
        pos = self.pos
        if pos < 0:
            return -1
        data = self.data
        first = data.find(b"\n", pos)
        if first < 0:
            return -1
        if self.carry + first - pos == 1:  # that line is a lone CR: the empty line, no trailer fields
            return first + 1
        end = data.find(b"\n\r\n", first)  # the trailer fields' lines end here; then the empty line
        return end + 3 if end >= 0 else -1

    def end_read(self, data: bytes, received: int) -> ProtocolError | None:
        """The read is parsed: bound the line it leaves unfinished; the error to answer, if any."""
        self.data = b""
        if not self.in_line and received != self.started:
            return None  # inside a chunk's data: bounded by the body size limit
        last = data.rfind(b"\n")
        carry = self.carry = self.carry + len(data) if last < 0 else len(data) - last - 1
        if self.in_line:
            return ProtocolError(400, "Chunk extensions too long") if carry > self.limit else None
        # after a size line with no data since: the last chunk's trailer section (a chunk with data
        # would have produced body bytes), bounded as header fields are
        return ProtocolError(431, "Request trailer fields too large") if carry > self.trailer_limit else None
