"""One ``asyncio.Protocol`` per connection: httptools in, response bytes out.

The connection has one explicit stage, and each stage owns at most one deadline (kept for every
connection on one loop timer, ``timers.py``):

    stage      meaning                                      deadline
    IDLE       nothing outstanding, waiting for a request   timeout_keep_alive (close quietly)
    HEAD       receiving a request head                     timeout_header (408, close)
    BODY       receiving a request body                     timeout_body (408, close)
    HANDLING   last request read, responses outstanding     none
    CLOSING    no more input; close after the responses     none

Requests are handled concurrently but answered strictly in order: every parsed request joins
``pipeline`` and a finished response waits there until those before it are written. Reading is paused
(``pause_reading``) for three reasons, tracked as bits so each is released independently: too many
pipelined requests, an unread body buffer past its bound, and a client that does not read (the
transport asked us to ``pause_writing``).

This module is the input side (parsing, limits, timers, flow control); what happens once a head is
parsed (running the handler, encoding and writing answers in order) is in ``responder.py``.
"""
from __future__ import annotations

import asyncio
import re
from time import perf_counter
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httptools

from .errors import HTTPError, ProtocolError
from .request import Request
from .responder import EAGER_TASKS, Responder, error_logger
from .router import UNSET, WebSocketRoute
from .stages import (
    BODY,
    BODY_BUFFER_FULL,
    BODY_BUFFER_HIGH,
    CLOSING,
    HANDLING,
    HEAD,
    IDLE,
    PIPELINE_FULL,
    STAGE_NAMES,
    WRITE_PAUSED,
)
from .timers import INF
from .wire import CONTINUE_100, REASONS, status_line
from .wsconn import WebSocketSession, start_websocket

if TYPE_CHECKING:
    from .server import ServerState

_NO_HEADERS: list[tuple[bytes, bytes]] = []  # between requests; never appended to (on_url replaces it)
_CHECKED_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-length", b"connection"})
# What the head being parsed has said, as bits of ``_flags`` (reset to 0 for every request).
HOST_SEEN, CONNECTION_SEEN, CHUNKED, EXPECT_CONTINUE, UPGRADE, HAS_LENGTH = 1, 2, 4, 8, 16, 32
# RFC 9110 7.2 / RFC 3986: reg-name or IPv4, or an IP literal in brackets, and an optional port.
_HOST = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._~-]+)?\])(?::[0-9]{0,5})?\Z")
DRAIN_GRACE = 0.2  # shutting down: how long a fresh connection has to send its request head

_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}


class HttpProtocol(Responder, asyncio.Protocol):
    __slots__ = (
        # shared by every connection of the server
        "state", "app", "loop", "clock", "config", "access_log", "rt",
        # this connection
        "transport", "parser", "_peer", "scheme", "stage", "pipeline", "read_blockers",
        "write_paused", "drain_waiter", "deadline", "buffered", "flush_pending", "draining",
        "in_feed", "wbuf", "body_view", "body_offset", "timer_at", "write_timer",
        # the request being parsed
        "request", "_url", "_headers", "_flags", "_upgrade", "_content_length", "_head_started", "_head_size",
        "_partial_line",
        # a WebSocket upgrade: the request waiting for the parser to stop, then the session that took over
        "upgrade_to", "upgraded",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.app = state.app
        self.loop = state.loop
        self.clock = state.clock
        self.config = state.config
        self.access_log = state.config.access_log
        self.rt = state.rt  # realtime.py: deadlines, shedding, metrics; None when unused
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._peer: tuple[str, int] | None = None  # fetched on first use: an idle connection keeps nothing
        self.scheme = "http"
        self.stage = IDLE
        self.pipeline: list[Request] = []  # bounded by limit_pipeline; a list is 10x smaller than a deque
        self.read_blockers = 0
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.timer_at = INF  # when this connection's entry in the server's Timers is due (timers.py)
        self.deadline: float | None = None
        self.buffered = 0
        self.flush_pending = False
        self.draining = False
        self.in_feed = False  # inside parser.feed_data: answers collect in wbuf, one write per read
        self.wbuf = state.wbuf  # shared: only the connection inside feed_data uses it, and empties it
        self.body_view: memoryview | None = None  # a large body being fed as the transport drains
        self.body_offset = 0
        self.request: Request | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = _NO_HEADERS
        self._flags = 0
        self._upgrade = b""  # valid when _flags & UPGRADE
        self._content_length = 0  # valid when _flags & HAS_LENGTH
        self._head_started = False  # a request head has begun and is not complete (408, not a quiet close)
        self._head_size = 0
        self._partial_line = 0
        self.write_timer: asyncio.TimerHandle | None = None
        self.upgrade_to: tuple[Request, WebSocketRoute] | None = None
        self.upgraded: WebSocketSession | None = None

    def peer(self) -> tuple[str, int] | None:
        """The client's (host, port), asked of the transport the first time a request wants it."""
        peer = self._peer
        if peer is None and self.transport is not None:
            try:
                info = self.transport.get_extra_info("peername")
            except OSError:  # already closed
                return None
            if isinstance(info, tuple) and len(info) >= 2:
                peer = self._peer = (info[0], info[1])
        return peer

    # -- connection events ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.config.limit_connections
        if limit is not None and len(self.state.connections) >= limit:
            # Over capacity: one cheap answer, then close. Never counted as a connection.
            self.stage = CLOSING
            transport.write(self._error_bytes(503, "Server is at its connection limit; retry shortly"))
            transport.close()
            return
        self.state.connections.add(self)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        # The first head must arrive within the header timeout, counted from the connection's start.
        self._enter(HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_streams()
        self.state.forget(self)
        if self.rt is not None:  # realtime hook: the requests of a lost connection are not in flight
            self.rt.on_lost(self)
        self.stage = CLOSING
        self.deadline = None
        self.timer_at = INF  # its queued timer, if any, is now stale
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        for req in self.pipeline:
            req._disconnected = True
            req._wake()
            if req._turn is not None and not req._turn.done():
                req._turn.set_result(None)
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        # A client may half-close after sending its request: answer what is outstanding, then close.
        # A request cut off mid-body can never complete: its reader hears ClientDisconnected.
        req = self.request
        if req is not None:
            req._disconnected = True
            req._wake()
            return False
        if self._end_streams():  # a client that closes during a stream (SSE...) is gone, as uvicorn takes it
            return False
        if self.pipeline:
            self.stage = CLOSING  # _flush closes once the pipeline is empty
            self.deadline = None
            self.pipeline[-1].keep_alive = False  # only the last answer may say "close"
            return True
        return False

    def _end_streams(self) -> bool:
        """Cancel the producer of a streamed response in progress: its client is gone, so the generator
        is closed now (its ``finally`` runs) rather than at its next chunk, which may be minutes away.

        A streamed response has its head written (``_status``) and no answer queued (``_out``) while its
        task runs; the handler itself has returned, so no handler is ever cancelled by this.
        """
        ended = False
        for req in self.pipeline:
            task = req._task
            if req._status and req._out is None and task is not None and not task.done():
                task.cancel()
                ended = True
        return ended

    def pause_writing(self) -> None:
        self.write_paused = True
        self._block(WRITE_PAUSED)
        if self.write_timer is None and self.config.timeout_write:
            self.write_timer = self.loop.call_later(self.config.timeout_write, self._on_write_timeout)

    def _on_write_timeout(self) -> None:
        """The client has not read for ``timeout_write`` seconds: drop it, freeing what it holds."""
        self.write_timer = None
        if self.write_paused and self.transport is not None:
            self.stage = CLOSING
            self.transport.abort()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._unblock(WRITE_PAUSED)
        if self.body_view is not None:
            self._flush()

    def data_received(self, data: bytes) -> None:
        stage = self.stage
        if stage <= HEAD:  # IDLE or HEAD: these bytes begin a request head
            self._head_started = True
        elif stage == CLOSING:
            return
        self.in_feed = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__  # httptools wraps what our callbacks raise
            if isinstance(cause, ProtocolError):
                self._reject(cause.status, cause.reason)
            else:
                error_logger.error("Internal error while parsing a request", exc_info=cause)
                self._reject(500, "Internal Server Error")
        except httptools.HttpParserUpgrade as exc:
            if self.stage != CLOSING and self.parser.get_method() == b"PRI":
                self._reject(505, "HTTP/2 is not supported; use HTTP/1.1")
            else:
                self._on_upgrade(data, exc.args[0] if exc.args else len(data))
        except httptools.HttpParserInvalidMethodError:
            self._reject(400, "Invalid HTTP method")
        except httptools.HttpParserError as exc:
            if self.stage != CLOSING:
                if str(exc) == "Invalid HTTP version":
                    self._reject(505, "HTTP version not supported; use HTTP/1.1")
                else:
                    self._reject(400, _parser_reason(exc))
        finally:
            self.in_feed = False
            wbuf = self.wbuf
            if wbuf:  # the answers to this read, in one write (the list is shared: always empty it)
                if not self.transport.is_closing():
                    self.transport.write(wbuf[0] if len(wbuf) == 1 else b"".join(wbuf))
                wbuf.clear()
        if self._head_started:  # a request head has begun and is not complete
            if self.stage != HEAD:
                if self.stage == CLOSING:
                    return
                if not self._url and not data.strip(b"\r\n"):  # stray CRLF between requests (RFC 9112 2.2)
                    self._head_started = False
                    return
                self._enter(HEAD)  # timeout_header runs from the head's first byte
            # httptools holds an unfinished header line internally; bound it from the outside.
            newline = data.rfind(b"\n")
            self._partial_line = self._partial_line + len(data) if newline < 0 else len(data) - newline - 1
            partial = self._partial_line if self._headers else self._partial_line - len(self._url)
            if partial + self._head_size > self.config.limit_request_header_size:
                self._reject(431, "Request header fields too large")
                return
        elif self.stage == IDLE:  # keep-alive timeout from the end of this read
            self._set_deadline(self.loop.time() + self.config.timeout_keep_alive)
        if len(self.pipeline) > self.config.limit_pipeline:
            self._block(PIPELINE_FULL)

    # -- stages and their deadline ---------------------------------------------------------------------
    def _enter(self, stage: int) -> None:
        """Move to ``stage`` and set its deadline; the timer is re-armed lazily, not per request."""
        self.stage = stage
        if stage == IDLE:
            timeout = self.config.timeout_keep_alive
        elif stage == HEAD:
            timeout = self.config.timeout_header
        elif stage == BODY:
            timeout = self.config.timeout_body
        else:
            self.deadline = None
            return
        self._set_deadline(self.loop.time() + timeout)

    def _set_deadline(self, deadline: float) -> None:
        # The queued timer fires no later than the deadline; when it fires early it re-queues for
        # the deadline then current, so a deadline moving later (the usual case) costs nothing.
        self.deadline = deadline
        if deadline < self.timer_at:
            self.timer_at = deadline
            self.state.timers.schedule(self, deadline)

    def _on_timer(self) -> None:
        """Called by the server's Timers (timers.py) when this connection's queued time comes."""
        deadline = self.deadline
        if deadline is None or self.transport is None or self.stage == CLOSING:
            return
        if self.loop.time() < deadline:  # the deadline moved later since it was queued
            self._set_deadline(deadline)
            return
        stage = self.stage
        if stage == IDLE:
            self.transport.close()
        elif stage == HEAD:
            if self._head_started:
                self._reject(408, "Request head not received in time")
            else:  # never sent a byte of this request: nothing to answer
                self.stage = CLOSING
                self.transport.close()
        elif stage == BODY:
            self._reject(408, "Request body not received in time")

    # -- httptools callbacks ---------------------------------------------------------------------
    # Per request httptools calls on_url (per piece of the target), on_header (per header),
    # on_headers_complete, on_body (per piece) and on_message_complete. There is deliberately no
    # on_message_begin: each callback the protocol defines costs a call per request and a bound
    # method per connection; a head begins when bytes arrive while idle or when its target does.
    def on_url(self, url: bytes) -> None:
        if self._url:  # the target arrived in pieces
            url = self._url + url
        else:  # a new request head (perhaps behind another in the same read)
            self._headers = []
            self._head_started = True
        if len(url) > self.config.limit_request_line:
            raise ProtocolError(414, "Request URI too long")
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if value and (value[-1] == 32 or value[-1] == 9):  # trailing OWS is not part of the value
            value = value.rstrip(b" \t")
        self._headers.append((name, value))
        size = self._head_size + len(name) + len(value) + 4
        if size > self.config.limit_request_header_size:
            raise ProtocolError(431, "Request header fields too large")
        self._head_size = size
        if name == b"host":
            if self._flags & HOST_SEEN:
                raise ProtocolError(400, "More than one Host header")
            self._flags |= HOST_SEEN
            if value is not self.state.last_host and value != self.state.last_host:
                if not _HOST.match(value):
                    raise ProtocolError(400, "Invalid Host header")
                self.state.last_host = value  # clients repeat one Host: validate it once
        elif name in _CHECKED_HEADERS:
            self._check_header(name, value)

    def _check_header(self, name: bytes, value: bytes) -> None:
        """The few headers that decide framing or routing: checked here, once, as they arrive."""
        if name == b"transfer-encoding":
            codings = [c.strip() for c in value.lower().split(b",")]
            if codings[-1] != b"chunked":
                raise ProtocolError(400, "Transfer-Encoding must end with chunked")
            if len(codings) > 1:
                raise ProtocolError(501, "Only the chunked transfer coding is supported")
            self._flags |= CHUNKED
        elif name == b"content-length":
            if not value.isdigit():
                raise ProtocolError(400, "Invalid Content-Length")
            self._content_length = int(value)
            self._flags |= HAS_LENGTH
        elif name == b"connection":
            self._flags |= CONNECTION_SEEN
        elif name == b"expect":
            if value.lower() == b"100-continue":
                self._flags |= EXPECT_CONTINUE
        elif name == b"upgrade":
            self._upgrade = value.lower()
            self._flags |= UPGRADE

    def on_headers_complete(self) -> None:
        parser = self.parser
        flags = self._flags
        keep_alive = parser.should_keep_alive()
        if keep_alive and not flags & CONNECTION_SEEN:
            # llhttp keeps a request alive without a Connection header only for HTTP/1.1 (it closes
            # 1.0, 0.9 and 2.0 by default), so the version is known without asking (which is slow).
            version = "1.1"
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                raise ProtocolError(505, f"HTTP version {version} is not supported")
            if flags & CHUNKED and version == "1.0":
                keep_alive = False  # RFC 9112 6.1: Transfer-Encoding in 1.0 is faulty framing; close after
        if not flags & HOST_SEEN and version == "1.1":
            raise ProtocolError(400, "Missing Host header")
        headers = self._headers
        if len(headers) > self.config.limit_request_fields:  # memory is bounded by the size check
            raise ProtocolError(431, "Too many request header fields")
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        url = self._url
        if url[0] != 47:  # not "/..."
            url = _origin_form(url)
        if 63 in url:  # "?"
            raw_path, _, query = url.partition(b"?")
        else:
            raw_path, query = url, b""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        if self.draining:
            keep_alive = False
        req = Request(self, method, raw_path, query, path, headers, version, keep_alive, None, self.scheme)
        # The request owns what was parsed; reset for the next head (an idle connection keeps nothing).
        self._url = b""
        self._headers = _NO_HEADERS
        self._flags = 0
        self._head_size = 0
        self._partial_line = 0
        self._head_started = False
        self.request = req
        self.pipeline.append(req)
        if self.state.on_request is not None:  # only with --proxy-headers or --limit-max-requests (server.py)
            self.state.on_request(req)
        if self.access_log:
            req._start = perf_counter()  # not loop.time(): uvloop's clock moves in whole milliseconds
        upgrade = flags & UPGRADE and parser.should_upgrade()
        if upgrade:
            if self._upgrade == b"h2c":  # RFC 9110 7.8: a server may ignore Upgrade; serve it over 1.1
                req.keep_alive = False
            elif self._upgrade != b"websocket":  # (a WebSocket is checked against its route below)
                raise ProtocolError(400, f"Upgrade to {self._upgrade.decode('latin-1')} is not supported")
        app = self.app
        routes = app.static_routes.get(path)  # the common case, one probe; params, 404, 405: resolve()
        route = None if routes is None else routes.get(method)
        if route is None:
            route, req._values, error = app.resolve(method, path)
            if error is not None:
                req._error = error
        req.route = route
        if upgrade and self._upgrade == b"websocket":
            if type(route) is not WebSocketRoute:
                raise ProtocolError(400, "Upgrade to websocket is not supported here")
            if len(self.pipeline) > 1:
                raise ProtocolError(400, "A WebSocket upgrade must not be pipelined behind other requests")
            self.pipeline.pop()
            self.upgrade_to = (req, route)  # handed over in _on_upgrade, once httptools stops at the head's end
            self._upgrade = b""
            return
        self.stage = BODY  # with no body, on_message_complete comes next, in this same feed
        if flags & (HAS_LENGTH | CHUNKED):
            limit = self.config.max_body_size if route is None or route.max_body_size is UNSET else route.max_body_size
            req.max_body_size = limit
            if limit is not None and flags & HAS_LENGTH and self._content_length > limit:
                raise ProtocolError(413, f"Request body is larger than the limit of {limit} bytes")
            req._expect_continue = flags & EXPECT_CONTINUE != 0 and version == "1.1"
            if flags & CHUNKED or self._content_length > 0:
                self._enter(BODY)
        if self.rt is not None:
            # Realtime hook: shed (answered), or deadline armed. Then the handler runs in a task, never
            # inline nor eagerly (3.12+), so every head of a read is admitted or refused, and its budget
            # started, before any handler runs: otherwise the queue hides in the socket buffer, where
            # shedding cannot see it, and a later head's budget starts only after earlier handlers ran.
            if not self.rt.on_request(self, req):
                req._task = self.loop.create_task(self._handle(req))
            return
        if route is not None and route.inline and app.entry is None:
            self._run_inline(req, route)
            return
        if EAGER_TASKS:
            req._task = asyncio.Task(self._handle(req), loop=self.loop, eager_start=True)
        else:
            req._task = self.loop.create_task(self._handle(req))

    def on_body(self, body: bytes) -> None:
        req = self.request
        if req is None:
            return
        req._received += len(body)
        self.deadline = self.loop.time() + self.config.timeout_body  # an inactivity timer: any byte extends it
        limit = req.max_body_size
        if limit is not None and req._received > limit:
            raise ProtocolError(413, f"Request body is larger than the limit of {limit} bytes")
        if req._status:  # already answered without reading the body: discard
            return
        if req._chunks:
            req._chunks.append(body)
        else:
            req._chunks = [body]
        self.buffered += len(body)
        if self.buffered > BODY_BUFFER_HIGH:
            self._block(BODY_BUFFER_FULL)
        req._wake()

    def on_message_complete(self) -> None:
        req = self.request
        self.request = None
        if req is None:
            return
        req._complete = True
        req._expect_continue = False
        if req._waiter is not None:
            req._wake()
        if self.buffered:
            self.buffered = 0
            self._unblock(BODY_BUFFER_FULL)
        if not req.keep_alive:
            self.stage = CLOSING  # RFC 9112 9.6: nothing after a request that closes is processed
            self.deadline = None
        elif self.pipeline:
            self.stage = HANDLING
            self.deadline = None
        else:
            self.stage = IDLE  # its deadline is set once per read, in data_received

    # -- body flow, called by Request ------------------------------------------------------------------
    def body_wanted(self, req: Request) -> None:
        """The handler is waiting for body bytes: ask for them (100 Continue) and let them in."""
        if req._expect_continue:
            req._expect_continue = False
            if self.pipeline and self.pipeline[0] is req:
                self.transport.write(CONTINUE_100)
            else:
                req._continue_due = True  # sent when earlier responses are out, to keep order
        self._unblock(BODY_BUFFER_FULL)

    def body_consumed(self, req: Request) -> None:
        if req is self.request:
            self.buffered = 0
            self._unblock(BODY_BUFFER_FULL)

    # -- errors ------------------------------------------------------------------------------------------
    def _reject(self, status: int, reason: str) -> None:
        """Answer bad input with ``status`` after the responses already due, then close."""
        self.stage = CLOSING
        self.deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        req = self.request
        self.request = None
        if req is None or req._status:
            req = Request(self, "-", self._url, b"", "", self._headers, "1.1", False, None, self.scheme)
            self.pipeline.append(req)
        req.keep_alive = False
        req._error = HTTPError(status, reason)
        req._wake()
        data = self._error_bytes(status, reason)
        self._emit(req, data, True, status, len(data))
        self._block(PIPELINE_FULL)  # stop reading: nothing more from this client is processed

    def _error_bytes(self, status: int, reason: str) -> bytes:
        body = (reason or REASONS.get(status, "Error")).encode("utf-8", "replace")
        return b"%s%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (
            status_line(status), self.clock.close, len(body), body)

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        # httptools stops at an Upgrade request after completing it; an h2c upgrade was served as
        # HTTP/1.1 and closes after its answer. Anything after it on the wire is not parsed, except
        # by a WebSocket, which takes the transport over (wsconn.py) with the bytes past the head.
        self.stage = CLOSING
        self.deadline = None
        pending = self.upgrade_to
        if pending is None or self.transport is None or self.transport.is_closing():
            return
        self.upgrade_to = None
        if self.write_timer is not None:  # the session watches its own writes from now on
            self.write_timer.cancel()
            self.write_timer = None
        if self.read_blockers:
            self.read_blockers = 0
            self.transport.resume_reading()
        req, route = pending
        self.upgraded = start_websocket(self.transport, req, route, req._values, self.config, data[offset:],
                                        self._on_websocket_closed, self.write_paused)

    def _on_websocket_closed(self) -> None:
        self.upgraded = None
        self.connection_lost(None)

    # -- read pausing -----------------------------------------------------------------------------------
    def _block(self, reason: int) -> None:
        if not self.read_blockers and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.read_blockers |= reason

    def _unblock(self, reason: int) -> None:
        if self.read_blockers & reason:
            self.read_blockers &= ~reason
            if not self.read_blockers and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # -- shutdown -------------------------------------------------------------------------------------
    def start_draining(self) -> None:
        """Graceful shutdown: close now if idle, else after the responses outstanding."""
        self.draining = True
        if self.upgraded is not None:
            self.upgraded.shutdown()  # close 1001; the connection is forgotten when its TCP closes
            return
        if self.transport is None or self.stage == CLOSING:
            return
        if self.request is not None:  # its body is still arriving: finish reading it, then close
            self.request.keep_alive = False
        elif self.pipeline:
            self.pipeline[-1].keep_alive = False  # only the last answer may say "close"
            self.stage = CLOSING
            self.deadline = None
        elif self.stage == HEAD:  # connected, or mid-head: its request is on the way, so answer it
            self._hurry(DRAIN_GRACE)  # (with Connection: close) if it comes soon
        else:
            self.stage = CLOSING
            self.transport.close()

    def _hurry(self, seconds: float) -> None:
        deadline = self.loop.time() + seconds
        if self.deadline is None or deadline < self.deadline:
            self._set_deadline(deadline)

    def __repr__(self) -> str:
        peer = self.peer()
        client = f"{peer[0]}:{peer[1]}" if peer else "-"
        return f"<HttpProtocol {client} stage={STAGE_NAMES[self.stage]} pipeline={len(self.pipeline)}>"

def _origin_form(url: bytes) -> bytes:
    """Absolute-form (``http://host/path?q``) to origin-form; ``*`` (OPTIONS) stays as is."""
    if url == b"*":
        return url
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise ProtocolError(400, "Invalid request target") from None
    path = parsed.path or b"/"
    return path + b"?" + parsed.query if parsed.query else path


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or "Malformed request"
    return f"Bad Request: {text}"
