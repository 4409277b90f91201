"""The response model and its helpers.

A ``Response`` holds its status, headers and the body bytes, rendered once. Framing headers
(Content-Length, Transfer-Encoding, Connection, Date, Server) belong to the server: it writes them from
what it knows about the connection, and ignores any the application sets.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from email.utils import format_datetime, formatdate
from typing import Any, AsyncIterable
from urllib.parse import quote

import orjson

from .datastructures import HeadersInit, MutableHeaders
from .wire import HTML_TYPE, JSON_TYPE, OCTET_TYPE, TEXT_TYPE, check_header, status_line

#: Header names the server writes itself; application values for them are not sent.
#: ``Server`` is the server's like ``Date``: set it with the ``server_header`` setting (``None`` for none).
MANAGED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"})


class Response:
    """``Response(body=b"", status=200, headers=None, content_type=None)``.

    A ``str`` body is UTF-8 encoded (and defaults to text/plain); ``bytes`` default to
    application/octet-stream when a body is given.
    """

    # With no headers given, ``headers`` is built only if asked for: the usual response is a status,
    # a body and a content type, whose head is then a join of ready-made lines (``encode_head``).
    __slots__ = ("body", "status", "_headers", "_type_line")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeadersInit = None,
        content_type: str | None = None,
    ) -> None:
        if type(body) is not bytes:
            if isinstance(body, str):
                body = body.encode("utf-8")
                if content_type is None:
                    content_type = TEXT_TYPE
            elif isinstance(body, (bytes, bytearray, memoryview)):
                body = bytes(body)
            else:
                raise TypeError(f"Response body must be bytes or str, not {type(body).__name__}; use json() for objects")
        self.body: bytes = body
        self.status = status if type(status) is int else int(status)
        if content_type is None and body:
            content_type = OCTET_TYPE
        if headers is None:
            self._headers: MutableHeaders | None = None
            self._type_line = b"" if content_type is None else _content_type_line(content_type)
        else:
            self._headers = MutableHeaders(headers)
            self._type_line = b""
            if content_type is not None and "content-type" not in self._headers:
                self._headers.add("Content-Type", content_type)

    @property
    def headers(self) -> MutableHeaders:
        """The response's headers (Content-Type included), mutable until the response is sent."""
        headers = self._headers
        if headers is None:
            headers = self._headers = MutableHeaders()
            if self._type_line:
                headers.add("Content-Type", self._type_line[14:-2].decode("latin-1"))
                self._type_line = b""
        return headers

    @headers.setter
    def headers(self, headers: HeadersInit) -> None:
        self._headers = headers if isinstance(headers, MutableHeaders) else MutableHeaders(headers)
        self._type_line = b""

    # -- cookies ---------------------------------------------------------------------------------
    def set_cookie(
        self,
        key: str,
        value: str = "",
        max_age: int | None = None,
        expires: int | float | str | datetime | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header (RFC 6265). ``expires`` is seconds from now (a number), a
        ``datetime`` (naive means UTC) or an HTTP date string; numbers and datetimes are sent as an
        IMF-fixdate (RFC 9110 5.6.7).

        ``ValueError`` for a name that is not a token, or a ``path``, ``domain`` or ``expires`` that
        could end its attribute (``;``, control characters; for ``domain`` also ``=``, ``,`` and spaces).
        """
        if not isinstance(key, str) or _COOKIE_NAME.fullmatch(key) is None:
            raise ValueError(f"cookie name {key!r} must be an HTTP token (no '=', ';', spaces or controls)")
        parts = [f"{key}={quote(value, safe='')}"]
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if expires is not None:
            if isinstance(expires, datetime):
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=timezone.utc)
                expires = format_datetime(expires.astimezone(timezone.utc), usegmt=True)
            elif isinstance(expires, (int, float)):
                expires = formatdate(time.time() + expires, usegmt=True)
            parts.append(f"Expires={_attribute('expires', expires, _COOKIE_ATTRIBUTE)}")
        if path is not None:
            parts.append(f"Path={_attribute('path', path, _COOKIE_ATTRIBUTE)}")
        if domain is not None:
            parts.append(f"Domain={_attribute('domain', domain, _COOKIE_DOMAIN)}")
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        if samesite is not None:
            if samesite.lower() not in ("strict", "lax", "none"):
                raise ValueError("samesite must be 'strict', 'lax' or 'none'")
            parts.append(f"SameSite={samesite.capitalize()}")
        self.headers.add("Set-Cookie", "; ".join(parts))

    def delete_cookie(
        self, key: str, path: str = "/", domain: str | None = None, secure: bool = False,
        httponly: bool = False, samesite: str | None = "lax",
    ) -> None:
        self.set_cookie(key, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path=path,
                        domain=domain, secure=secure, httponly=httponly, samesite=samesite)

    # -- wire ------------------------------------------------------------------------------------
    def wants_close(self) -> bool:
        if self._headers is None:
            return False
        value = self._headers.get("connection")
        return value is not None and "close" in value.lower()

    def encode_head(self, framing: bytes, tail: bytes) -> bytes:
        """Status line, application headers, the server's framing line(s) and tail, blank line."""
        if self._headers is None:
            return b"".join((status_line(self.status), self._type_line, framing, tail, b"\r\n"))
        lines = [status_line(self.status)]
        for name, value in self._headers._list:
            if name.lower() not in MANAGED_HEADERS:
                lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        lines.append(framing)
        lines.append(tail)
        lines.append(b"\r\n")
        return b"".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, body={len(self.body)} bytes)"


# RFC 6265 4.1.1: a cookie name is a token; an attribute value is anything but controls and ";". A domain
# is a host name: no "=", "," or spaces either.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_ATTRIBUTE = re.compile(r"[^\x00-\x1f\x7f;]*")
_COOKIE_DOMAIN = re.compile(r"[^\x00-\x20\x7f;=,]+")


def _attribute(name: str, value: Any, allowed: re.Pattern[str]) -> str:
    if not isinstance(value, str) or allowed.fullmatch(value) is None:
        raise ValueError(f"cookie {name} {value!r} would end its attribute early "
                         "(no ';' or control characters; in a domain no '=', ',' or spaces either)")
    return value


_TYPE_LINES: dict[str, bytes] = {}  # content type -> its checked header line; apps use a handful


def _content_type_line(content_type: str) -> bytes:
    line = _TYPE_LINES.get(content_type)
    if line is None:
        check_header("Content-Type", content_type)  # no CR/LF from application data, ever
        line = b"Content-Type: %s\r\n" % content_type.encode("latin-1")
        if len(_TYPE_LINES) < 256:
            _TYPE_LINES[content_type] = line
    return line


class RawResponse(Response):
    """A response whose header lines arrive rendered and checked (the ASGI adapter's): ``lines`` is
    ``b"Name: value\\r\\n"`` lines without the server's framing headers, so the head is one join.

    ``close`` says the application asked to close the connection. Asking for ``headers`` parses the
    lines back (a finisher, say); the response is then an ordinary one.
    """

    __slots__ = ("close",)

    def __init__(self, body: bytes, status: int, lines: bytes, close: bool = False) -> None:
        self.body = body
        self.status = status
        self._headers = None
        self._type_line = lines  # encode_head joins it as it would a lone Content-Type line
        self.close = close

    def _parsed_headers(self) -> MutableHeaders:
        headers = self._headers
        if headers is None:
            pairs = []
            for line in self._type_line.split(b"\r\n")[:-1]:
                name, _, value = line.partition(b": ")
                pairs.append((name.decode("latin-1"), value.decode("latin-1")))
            if self.close:
                pairs.append(("Connection", "close"))
            headers = self._headers = MutableHeaders(pairs)
            self._type_line = b""
        return headers

    headers = property(_parsed_headers, Response.headers.fset)  # type: ignore[assignment]

    def wants_close(self) -> bool:
        return self.close if self._headers is None else super().wants_close()


class StreamResponse(Response):
    """A response whose body comes from an async iterable of ``str`` or ``bytes`` chunks.

    Sent chunked to HTTP/1.1 clients (close-delimited to HTTP/1.0), and produced no faster than the
    client reads: the iterator is not advanced while the transport is paused.

    ``content_length``, when known (a file, a proxied body), is the exact number of bytes the iterator
    yields: the connection then frames the body with ``Content-Length`` instead of chunked (HEAD
    included), and closes the connection if the iterator ends short of it or raises.
    """

    __slots__ = ("iterator", "content_length")

    def __init__(
        self,
        iterator: AsyncIterable[bytes | str],
        status: int = 200,
        headers: HeadersInit = None,
        content_type: str | None = None,
        *,
        content_length: int | None = None,
    ) -> None:
        if not hasattr(iterator, "__aiter__"):
            raise TypeError("stream() takes an async iterable (an async generator, for example)")
        if content_length is not None and content_length < 0:
            raise ValueError("content_length must be >= 0, or None")
        super().__init__(b"", status, headers, content_type or None)
        self.iterator = iterator
        self.content_length = content_length


def text(content: str, status: int = 200, headers: HeadersInit = None) -> Response:
    return Response(content, status, headers, TEXT_TYPE)


def html(content: str, status: int = 200, headers: HeadersInit = None) -> Response:
    return Response(content, status, headers, HTML_TYPE)


def json(obj: Any, status: int = 200, headers: HeadersInit = None) -> Response:
    """JSON via orjson (dataclasses, datetimes, UUIDs and numpy arrays serialise natively)."""
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, JSON_TYPE)


def redirect(url: str, status: int = 307, headers: HeadersInit = None) -> Response:
    if not 300 <= status < 400:
        raise ValueError(f"redirect status must be 3xx, not {status}")
    response = Response(b"", status, headers)
    response.headers["Location"] = quote(url, safe=":/%#?=@[]!$&'()*+,;~")
    return response


def stream(
    iterable: AsyncIterable[bytes | str],
    status: int = 200,
    headers: HeadersInit = None,
    content_type: str | None = None,
) -> StreamResponse:
    return StreamResponse(iterable, status, headers, content_type)


