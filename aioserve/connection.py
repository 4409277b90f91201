"""One ``asyncio.Protocol`` per connection: httptools in, response bytes out.

The connection has one explicit stage, changed only by ``_enter``, and each stage owns at most one
timeout (kept for every connection on one loop timer, ``timers.py``):

    stage      meaning                                      timeout
    IDLE       nothing outstanding, waiting for a request   timeout_keep_alive (close quietly)
    HEAD       receiving a request head                     timeout_header (408, close)
    BODY       receiving a request body                     timeout_body (408, close)
    HANDLING   last request read, answers outstanding       none
    CLOSING    no more input; close after the answers       none

Every parsed head becomes an ``Exchange`` (exchange.py) in ``pipeline``. Requests are handled
concurrently but answered strictly in order: a finished answer waits in its exchange until those
before it are written; answers finished in the same read go out in one ``write``; a large body is fed
to the transport as it drains; a streamed body is produced no faster than the client reads. Reading
is paused (``pause_reading``) for three reasons, tracked as bits so each is released independently:
too many pipelined requests, an unread body buffer past its bound, and a client that does not read.

Handlers run in a context of their own: a task copies one, and a handler run inline (a plain ``def``,
or an ``async def`` that never awaits) runs in a fresh copy too, so a ``ContextVar`` set by one request
is never seen by the next. The real-time plug-in, when there is one, is called at five places here
and nowhere else: ``admit`` (head parsed), ``before_start`` (a task starts), ``started`` (its handler
starts; admission control only), ``finished`` (answered or dropped) and ``timing`` (Server-Timing).

Public surface, for plug-ins: ``can_answer``, ``answer(exchange, result)``, ``answer_head(...)``,
``drop(exchange)``, ``start_draining()``, ``abort()``, ``outstanding_tasks()``.
"""
from __future__ import annotations

import asyncio
import contextvars
import socket
import struct
import sys
from time import perf_counter
from types import CoroutineType, GeneratorType
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

from .errors import ClientDisconnected, HTTPError, ProtocolError, StreamCut, error_logger
from .exchange import Exchange
from .headcheck import (
    CHECKED_HEADERS,
    CHUNKED_BODY,
    ChunkLines,
    CONNECTION_SEEN,
    EXPECT_CONTINUE,
    HAS_LENGTH,
    HOST_SEEN,
    MALFORMED_LINE,
    METHODS,
    UPGRADE,
    allow_all,
    as_http11,
    check_header,
    check_host,
    origin_form,
    after_empty_lines,
    parser_reason,
    unknown_method,
)
from .rates import MinRate, unsent, waiting
from .request import Request
from .response import RawResponse, Response, StreamResponse
from .results import to_response
from .router import UNSET, WebSocketRoute
from .sendfile import send_plan, use_sendfile
from .shared import ServerState, one_step_driver
from .staticfiles import INLINE_READ, FileResponse
from .timers import INF
from .wire import (
    CHUNKED,
    CONTINUE_100,
    CONTENT_LENGTHS,
    JSON_200,
    JSON_LINE,
    JSON_TYPE,
    LAST_CHUNK,
    NO_BODY_STATUSES,
    NO_CONTENT,
    OCTET_200,
    OCTET_LINE,
    OCTET_TYPE,
    REASONS,
    TEXT_200,
    TEXT_LINE,
    TEXT_TYPE,
    chunk,
    content_length,
    END_OF_HEADS,
    end_of_head,
    status_line,
)
from .wsconn import WebSocketSession, start_websocket


IDLE, HEAD, BODY, HANDLING, CLOSING = range(5)
STAGE_NAMES = ("idle", "head", "body", "handling", "closing")
# Why reading is paused: bits, so each reason is released independently.
PIPELINE_FULL, BODY_BUFFER_FULL, WRITE_PAUSED, HELD_BACK = 1, 2, 4, 8
BODY_BUFFER_HIGH = 256 * 1024  # unread body bytes before reading pauses
# Unread body pieces before reading pauses: each costs about 40 bytes besides its own (a bytes object's
# header, a list slot), so a body of two-byte chunks would otherwise hold 6 MB before BODY_BUFFER_HIGH.
BODY_PIECES_HIGH = 4096
LARGE_BODY = 64 * 1024  # bodies this large are fed to the transport in slices as it drains
DRAIN_GRACE = 0.2  # shutting down: how long a fresh connection has to send its request head

_NO_HEADERS: list[tuple[bytes, bytes]] = []  # between requests; never appended to (on_url replaces it)


class _HoldRest(Exception):
    """Raised by ``on_url`` to stop the parser at a request's first byte: the rest of the read waits."""

# Python 3.12+ runs a new task's first step at once; a handler that never suspends then finishes
# without a trip through the event loop. 3.11 has no safe equivalent, so it gets a plain task.
EAGER_TASKS = sys.version_info >= (3, 12)
CLOSE_POLL = 0.05  # seconds between looks at a TLS close's last bytes (_close_when_sent)
_copy_context = contextvars.copy_context
_send = GeneratorType.send  # context.run(_send, driver, coro): no bound method made per request
# Bound once: Python 3.11 compiles a call on an imported name (METHODS.get(...)) as an attribute load
# then a call, which makes and frees a bound method on every request.
_method_name = METHODS.get
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and frees the send buffer
_PLAIN_500 = status_line(500) + b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n"


def _is_event_stream(response: Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")


class _BodyPastHead:
    """Parser callbacks for a body read on its own (``Connection._read_body_past_head``): the head fed
    first is a stand-in, so only the body's callbacks, and the trailer fields after it, reach the
    connection."""

    __slots__ = ("conn", "in_body", "on_body", "on_message_complete", "on_chunk_header", "on_chunk_complete")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.in_body = False
        self.on_body = conn.on_body
        self.on_message_complete = conn.on_message_complete
        self.on_chunk_header = conn.on_chunk_header
        self.on_chunk_complete = conn.on_chunk_complete

    def on_headers_complete(self) -> None:
        self.in_body = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:  # a trailer field
            self.conn.on_header(name, value)


class Connection(asyncio.Protocol):
    __slots__ = (
        # shared by every connection of the server
        "state", "app", "loop", "clock", "config", "access_log", "observer", "form_limits",
        # this connection
        "transport", "parser", "_peer", "scheme", "stage", "expires_at", "timer_at", "pipeline", "current",
        "read_blockers", "write_paused", "drain_waiter", "write_timer", "buffered", "flush_pending",
        "draining", "in_feed", "wbuf", "body_view", "body_offset", "held",
        # the request head being parsed
        "_url", "_headers", "_flags", "_upgrade", "_content_length", "_head_started", "_head_size",
        "_count_fields", "_partial_line", "_line", "_line_at", "_after", "_after_at", "_after_body", "_chunk_lines",
        # a WebSocket upgrade: the exchange waiting for the parser to stop, then the session that took over;
        # an Upgrade served as HTTP/1.1 (h2c) whose body httptools skipped: read past its head
        "upgrade_to", "upgraded", "ignored_upgrade",
        # minimum data rates (rates.py), made on first use: the body being read, the client reading
        "body_rate", "write_rate", "write_base", "write_mark",
        # a TLS close waiting for its last bytes to reach the client: (unsent count, when it last moved)
        "close_check",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.app = state.app
        self.loop = state.loop
        self.clock = state.clock
        self.config = state.config
        self.access_log = state.access is not None
        self.observer = state.observer  # realtime.py: deadlines, shedding, metrics; None when unused
        self.form_limits = state.form_limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._peer: tuple[str, int] | None = None  # fetched on first use: an idle connection keeps nothing
        self.scheme = "http"
        self.stage = IDLE
        self.expires_at: float | None = None  # when the current stage times out (loop time)
        self.timer_at = INF  # when this connection's entry in the server's Timers is due (timers.py)
        self.close_check: tuple[int, float] | None = None
        self.pipeline: list[Exchange] = []  # bounded by limit_pipeline; a list is 10x smaller than a deque
        self.current: Exchange | None = None  # the exchange whose body is being read
        self.read_blockers = 0
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.buffered = 0
        self.flush_pending = False
        self.draining = False
        self.in_feed = False  # inside parser.feed_data: answers collect in wbuf, one write per read
        self.wbuf = state.wbuf  # shared: only the connection inside feed_data uses it, and empties it
        self.held: bytes | None = None  # a read's requests past limit_pipeline, parsed once answers drain
        self.body_view: memoryview | None = None  # a large body being fed as the transport drains
        self.body_offset = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = _NO_HEADERS
        self._flags = 0
        self._upgrade = b""  # valid when _flags & UPGRADE
        self._content_length = 0  # valid when _flags & HAS_LENGTH
        self._head_started = False  # a request head has begun and is not complete (408, not a quiet close)
        self._head_size = 0  # header field bytes counted so far (name, value and 4), when counted
        self._count_fields = True  # whether on_header counts them, this read (see data_received)
        self._partial_line = 0
        # Where the request line being parsed begins (its check, RFC 9112 3): ``_line[_line_at:]``, the read
        # that holds it, or the head's bytes gathered over several reads; None when the start is unknown.
        self._line: bytes | bytearray | None = None
        self._line_at = 0
        # Where the last head of this read ended, to find a request pipelined behind it (_locate_head):
        # its head begins at _after[_after_at:] and its body is _after_body bytes (-1: chunked, unknown);
        # _after_at -1: the message ends at _after[_after_body]. None between reads.
        self._after: bytes | bytearray | None = None
        self._after_at = 0
        self._after_body = 0
        self._chunk_lines: ChunkLines | None = None  # a chunked body being read: its size lines' bound
        self.upgrade_to: Exchange | None = None
        self.upgraded: WebSocketSession | None = None
        self.ignored_upgrade: Exchange | None = None
        self.body_rate: MinRate | None = None
        self.write_rate: MinRate | None = None
        self.write_base = 0  # bytes the client had not taken when writing paused (rates.unsent)
        self.write_mark = 0  # the same, when the write timeout was last armed

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

    # -- transport events -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.config.limit_connections
        if limit is not None and len(self.state.connections) >= limit:
            # Over capacity: one cheap answer, then close. Never counted as a connection.
            self._enter(CLOSING)
            transport.write(self._error_bytes(503, "Server is at its connection limit; retry shortly"))  # type: ignore[attr-defined]
            transport.close()
            return
        self.state.connections.add(self)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        # The first head must arrive within the header timeout, counted from the connection's start.
        self._enter(HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self.held = None
        self._end_streams()
        self.state.forget(self)
        self._enter(CLOSING)
        self.timer_at = INF  # its queued timer, if any, is now stale
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        for ex in self.pipeline:
            self._release(ex)
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        # A client may half-close after sending its request: answer what is outstanding, then close.
        # A request cut off mid-body can never complete: its reader hears ClientDisconnected.
        ex = self.current
        if ex is not None:
            ex.disconnected = True
            ex.wake()
            return False
        if self._end_streams():  # a client that closes during a stream (SSE...) is gone, as uvicorn takes it
            return False
        if self.pipeline:
            if self.scheme == "https":
                # A TLS close_notify: asyncio's and uvloop's SSL transports shut down after it whatever
                # this returns (and log a warning for True), so no answer can follow: the client is gone.
                return False
            self._enter(CLOSING)  # _flush closes once the pipeline is empty
            self.pipeline[-1].keep_alive = False  # only the last answer may say "close"
            for ex in self.pipeline:  # an ASGI app waiting in receive() hears http.disconnect, as under uvicorn
                ex.peer_closed = True
                ex.wake()
            return True
        return False

    def _end_streams(self) -> bool:
        """Cancel the producer of a streamed answer in progress: its client is gone, so the generator
        is closed now (its ``finally`` runs) rather than at its next chunk, which may be minutes away.

        A streamed answer has its head written (``status``) and nothing queued (``out``) while its task
        runs; the handler itself has returned, so no handler is ever cancelled by this.
        """
        ended = cut = False
        for ex in self.pipeline:
            task = ex.task
            if ex.status and ex.out is None and task is not None and not task.done() and not task.cancelling():
                task.cancel()  # once: a second cancel would cut its generator's cleanup at its first await
                ended = True
                cut = cut or ex.close_delimited
        if cut:  # a close would read as the end of a close-delimited body: reset, so it reads as cut short
            self._reset()
        return ended

    def pause_writing(self) -> None:
        self.write_paused = True
        self._block(WRITE_PAUSED)
        if self.config.min_response_rate and self.upgraded is None:  # the client must read at the rate
            now = self.loop.time()
            rate = self.write_rate
            if rate is None:
                rate = self.write_rate = MinRate(self.config.min_response_rate, self.config.min_rate_grace_period)
            self.write_base = unsent(self.transport)
            rate.start(now)
            self._wake_at(rate.due(now, 0) + 0.001)
        if self.write_timer is None and self.config.timeout_write:
            self.write_mark = unsent(self.transport)
            self.write_timer = self.loop.call_later(self.config.timeout_write, self._on_write_timeout)

    def _reset(self) -> None:
        """Drop a client that does not read, with a TCP reset: a plain close would leave the kernel
        sending what the socket holds (megabytes) to it for as long as it keeps reading slowly."""
        sock = self.transport.get_extra_info("socket")  # type: ignore[union-attr]
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
        self.transport.abort()  # type: ignore[union-attr]

    def _on_write_timeout(self) -> None:
        """The client has taken nothing for ``timeout_write`` seconds: drop it, freeing what it holds."""
        self.write_timer = None
        if self.write_paused and self.transport is not None:
            left = unsent(self.transport)
            if left < self.write_mark:  # it took bytes meanwhile (from the kernel's queue): slow, not gone
                self.write_mark = left
                self.write_timer = self.loop.call_later(self.config.timeout_write, self._on_write_timeout)
                return
            self._enter(CLOSING)
            self._reset()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.write_rate is not None:
            self.write_rate.stop(self.loop.time())
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._unblock(WRITE_PAUSED)
        if self.body_view is not None:
            self._flush()
        if self.held is not None:
            self.loop.call_soon(self._feed_held)

    def data_received(self, data: bytes) -> None:
        stage = self.stage
        # A head that arrives whole in a read no larger than the head limit cannot pass it: its fields are
        # counted one by one only in a larger read, or when the head began in an earlier read (the part
        # of it this read leaves unfinished is counted at the end of the read, below).
        # (An if, not an assignment of the "or": Python 3.11 specializes a comparison only before a jump.)
        if self._head_started or len(data) > self.config.limit_request_header_size:
            self._count_fields = True
        else:
            self._count_fields = False
        if stage <= HEAD or stage == HANDLING:  # these bytes begin or continue a request head
            line = self._line
            if line is not None:  # a head begun in an earlier read: gather it, bounded by the head limits
                if type(line) is not bytearray:
                    line = self._line = bytearray(line)
                line += data
            elif not self._head_started:  # a head begins this read
                self._head_started = True
                self._line = data
                self._line_at = 0
        elif stage == CLOSING:
            return
        else:  # BODY
            ex = self.current
            if ex is not None:
                if self._chunk_lines is not None:  # a chunked body: follow its lines
                    self._chunk_lines.begin_read(data, ex.received)
                else:  # a body of known length: where it ends in this read, for a head behind it
                    self._after = data
                    self._after_at = -1
                    self._after_body = self._content_length - ex.received
        retry = None  # bytes a fresh parser reads, once this read's answers are out
        self.in_feed = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__  # httptools wraps what our callbacks raise
            if isinstance(cause, _HoldRest):
                self._hold(self._line[self._line_at:])  # type: ignore[index]
            elif isinstance(cause, ProtocolError):
                self._reject(cause.status, cause.reason)
            else:
                error_logger.error("Internal error while parsing a request", exc_info=cause)
                self._reject(500, "Internal Server Error")
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self.stage != CLOSING and self.parser.get_method() == b"PRI":
                self._reject(505, "HTTP/2 is not supported; use HTTP/1.1")
            elif self.ignored_upgrade is not None:  # served as HTTP/1.1: its body follows the head
                retry = data[offset:]
            else:
                self._on_upgrade(data, offset)
        except httptools.HttpParserInvalidMethodError:
            # A token llhttp does not know is an unknown method (RFC 9110 9.1), when the line's start is known
            if self._line is None and self._after is not None:  # behind another request in this read
                self._locate_head()
            if self._line is not None and unknown_method(self._line, self._line_at):
                self._reject(501, "Method not implemented")
            else:
                self._reject(400, "Invalid HTTP method")
        except httptools.HttpParserError as exc:
            if self.stage != CLOSING:
                if str(exc) == "Pause on PRI/Upgrade":  # llhttp's stop at the HTTP/2 connection preface
                    self._reject(505, "HTTP/2 is not supported; use HTTP/1.1")
                elif str(exc) == "Invalid HTTP version":
                    # RFC 9110 6.2: HTTP/1.2..1.9 is processed as 1.1, when the line's start is known
                    retry = as_http11(self._line, self._line_at) if self._line is not None else None
                    if retry is None:
                        self._reject(505, "HTTP version not supported; use HTTP/1.1")
                else:
                    self._reject(400, parser_reason(exc))
        finally:
            self.in_feed = False
            after = self._after
            if after is not None:  # its offsets are of this read: used now or never
                if self._line is None and (self._after_body or after[-1] != 10):
                    self._locate_head()  # the first letters of a method may follow the last request
                else:
                    self._after = None
            if self._line is not None and self._line_at:  # an unfinished head behind another: keep it alone
                self._line = self._line[self._line_at:]
                self._line_at = 0
            wbuf = self.wbuf
            if wbuf:  # the answers to this read, in one write (the list is shared: always empty it)
                if not self.transport.is_closing():  # type: ignore[union-attr]
                    self.transport.write(wbuf[0] if len(wbuf) == 1 else b"".join(wbuf))  # type: ignore[union-attr]
                wbuf.clear()
        if retry is not None:
            if self.ignored_upgrade is not None:  # the body past an ignored Upgrade's head
                self._read_body_past_head(retry)
                return
            # the parser refused the version: a fresh one reads the line as 1.1
            self._fresh_parser()
            self.data_received(retry)
            return
        if self._head_started:  # a request head has begun and is not complete
            if self.stage != HEAD:
                if self.stage == CLOSING:
                    return
                if not self._url and not data.strip(b"\r\n"):  # stray CRLF between requests (RFC 9112 2.2)
                    self._head_started = False
                    self._line = None if data[-1] == 10 else b"\r"  # a CR that the next read's LF ends
                    return
                self._enter(HEAD)  # timeout_header runs from the head's first byte
            # httptools holds an unfinished header line internally; bound it from the outside.
            newline = data.rfind(b"\n")
            self._partial_line = self._partial_line + len(data) if newline < 0 else len(data) - newline - 1
            partial = self._partial_line if self._headers else self._partial_line - len(self._url)
            if not self._count_fields:  # this head's fields went uncounted in this read: count them now
                self._head_size = sum(len(name) + len(value) + 4 for name, value in self._headers)
            if partial + self._head_size > self.config.limit_request_header_size:
                self._reject(431, "Request header fields too large")
                return
        elif self.stage == IDLE:  # keep-alive timeout from the end of this read
            when = self.expires_at = self.loop.time() + self.config.timeout_keep_alive  # _expire_at, inline
            if when < self.timer_at:
                self.timer_at = when
                self.state.timers.schedule(self, when)
        elif self._chunk_lines is not None and self.stage == BODY and self.current is not None:
            refused = self._chunk_lines.end_read(data, self.current.received)  # the line left unfinished
            if refused is not None:
                self._reject(refused.status, refused.reason)
                return
        if self.pipeline and len(self.pipeline) > self.config.limit_pipeline:  # empty: answered inline
            self._block(PIPELINE_FULL)

    def _fresh_parser(self) -> None:
        """A new parser, and no head begun: for bytes that start a request line afresh."""
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers = _NO_HEADERS
        self._head_started = False
        self._partial_line = 0
        self._line = None
        self._line_at = 0

    # -- a read's requests past the pipeline limit ------------------------------------------------------
    def _hold(self, rest: bytes | bytearray) -> None:
        """Stop at a request's first byte (on_url): ``rest``, the read from there on, is parsed once the
        answers before it are written (``_feed_held``). Reading pauses meanwhile, so a read of thousands
        of pipelined requests costs at most limit_pipeline answers at a time, not one each at once."""
        self.held = bytes(rest)
        self._fresh_parser()
        self._after = None
        self._after_body = 0
        if self.stage == IDLE:  # waiting on its own answers, not on the client: no keep-alive timeout
            self._enter(HANDLING)
        self._block(HELD_BACK)
        self.loop.call_soon(self._feed_held)

    def _feed_held(self) -> None:
        """Parse the held requests once the client takes the answers before them (not write-paused)
        and the pipeline is down to half its limit; ``resume_writing`` and ``_flush`` call again."""
        held = self.held
        if held is None:
            return
        if self.transport is None or self.stage == CLOSING:
            self.held = None  # closing: requests not yet parsed are not answered (RFC 9112 9.3.2: retried)
            return
        if self.write_paused or len(self.pipeline) > self.config.limit_pipeline // 2:
            return
        self.held = None
        self.data_received(held)
        if self.held is None:
            self._unblock(HELD_BACK)

    # -- stages and their timeout -----------------------------------------------------------------------
    def _enter(self, stage: int) -> None:
        """Move to ``stage`` and set its timeout; the timer is re-armed lazily, not per request."""
        self.stage = stage
        if stage == IDLE:
            timeout = self.config.timeout_keep_alive
        elif stage == HEAD:
            timeout = self.config.timeout_header
        elif stage == BODY:
            timeout = self.config.timeout_body
        else:
            self.expires_at = None
            return
        self._expire_at(self.loop.time() + timeout)

    def _expire_at(self, when: float) -> None:
        # The queued timer fires no later than ``when``; when it fires early it re-queues for the
        # time then current, so a timeout moving later (the usual case) costs nothing.
        self.expires_at = when
        if when < self.timer_at:
            self.timer_at = when
            self.state.timers.schedule(self, when)

    def _wake_at(self, when: float) -> None:
        """Have ``on_timer`` called by ``when`` (a rate check), leaving the stage's timeout as it is."""
        if when < self.timer_at:
            self.timer_at = when
            self.state.timers.schedule(self, when)

    def _start_body(self, ex: Exchange) -> None:
        """A body is announced: its stage timeout starts now, and so does its rate's clock (or once
        100 Continue asks for the body: body_wanted)."""
        now = self.loop.time()
        self.stage = BODY
        self._expire_at(now + self.config.timeout_body)
        rate = self.body_rate
        if rate is None:
            if not self.config.min_request_body_rate:
                return
            rate = self.body_rate = MinRate(self.config.min_request_body_rate, self.config.min_rate_grace_period)
        if ex.expect_continue or self.read_blockers:
            rate.start(now, 0, False)
        else:
            rate.start(now)
            self._wake_at(now + rate.grace + 0.001)  # rate.due(now, 0): nothing is missed within the grace

    def _check_rates(self, now: float) -> bool:
        """The minimum data rates, on the connection's timer; False when the connection was cut."""
        rate = self.write_rate
        if rate is not None and self.write_paused and rate.since is not None:
            drained = self.write_base - unsent(self.transport)
            if rate.missed(now, drained):  # the client reads too slowly: drop it (a stream's generator
                self._enter(CLOSING)  # is closed by connection_lost)
                self._reset()
                return False
            self._wake_at(rate.due(now, drained) + 0.001)
        rate = self.body_rate
        ex = self.current
        if rate is not None and self.stage == BODY and ex is not None and rate.since is not None:
            if rate.missed(now, ex.received):
                self._reject(408, "Request body arrived slower than the minimum rate")
                return False
            self._wake_at(rate.due(now, ex.received) + 0.001)
        return True

    def on_timer(self) -> None:
        """Called by the server's Timers (timers.py) when this connection's queued time comes."""
        if (self.body_rate is not None or self.write_rate is not None) and self.transport is not None:
            if not self._check_rates(self.loop.time()):
                return
        if self.close_check is not None:
            self._close_when_sent()
            return
        when = self.expires_at
        if when is None or self.transport is None or self.stage == CLOSING:
            return
        if self.loop.time() < when:  # the timeout moved later since it was queued
            self._expire_at(when)
            return
        stage = self.stage
        if stage == IDLE:
            self._enter(CLOSING)
            self._close_when_sent()  # over TLS the last answer may still be on its way to the client
        elif stage == HEAD:
            if self._head_started:
                self._reject(408, "Request head not received in time")
            else:  # never sent a byte of this request: nothing to answer
                self._enter(CLOSING)
                self.transport.close()
        elif stage == BODY:
            ex = self.current
            if self.read_blockers or (ex is not None and (ex.expect_continue or ex.continue_due)):
                # Not the client's delay: reading is paused (a handler not reading, say), or the body
                # has not been asked for (100 Continue). The timeout runs again once it is read.
                self._expire_at(self.loop.time() + self.config.timeout_body)
            else:
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
            if self._line is None and self._after is not None:  # behind another: where its line begins
                self._locate_head()
                # One read may hold thousands of small requests: past limit_pipeline unwritten answers,
                # the rest of the read waits (data_received), so what it costs is bounded by the limit.
                if self._line is not None and len(self.wbuf) + len(self.pipeline) >= self.config.limit_pipeline:
                    raise _HoldRest
            self._headers = []
            self._head_started = True
        if len(url) > self.config.limit_request_line:
            raise ProtocolError(414, "Request URI too long")
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if value and (value[-1] == 32 or value[-1] == 9):  # trailing OWS is not part of the value
            value = value.rstrip(b" \t")
        headers = self._headers
        if headers is _NO_HEADERS:  # a trailer field of a chunked body: bounded, then dropped
            self._on_trailer(name, value)
            return
        headers.append((name, value))
        if self._count_fields:  # else this head arrives whole in a read within the limit (data_received)
            size = self._head_size + len(name) + len(value) + 4
            if size > self.config.limit_request_header_size:
                raise ProtocolError(431, "Request header fields too large")
            self._head_size = size
        if name == b"host":
            if self._flags & HOST_SEEN:
                raise ProtocolError(400, "More than one Host header")
            self._flags |= HOST_SEEN
            state = self.state
            if value is not state.last_host and value != state.last_host:
                check_host(value)
                state.last_host = value  # clients repeat one Host: validate it once
        elif name in CHECKED_HEADERS:
            self._flags |= check_header(name, value)
            if name == b"content-length":
                self._content_length = int(value)
            elif name == b"upgrade":
                self._upgrade = value.lower()

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        """Trailer fields (RFC 9112 7.1.2) are not offered to handlers: they count toward the header
        size limit and are dropped. They must never reach the next request's head state."""
        size = self._head_size + len(name) + len(value) + 4
        if size > self.config.limit_request_header_size:
            raise ProtocolError(431, "Request trailer fields too large")
        self._head_size = size
        if name == b"connection":  # llhttp would act on it (RFC 9110 6.5.1: not allowed in a trailer)
            raise ProtocolError(400, "Connection is not allowed in a trailer section")

    def on_headers_complete(self) -> None:
        parser = self.parser
        flags = self._flags
        raw_method = parser.get_method()
        line = self._line
        if line is not None:  # where this head's line begins is known: check it (RFC 9112 3)
            # llhttp skips repeated SP (RFC 9112 3 allows one): "method SP target SP HTTP/x.y CRLF" has its LF
            # at len(method) + len(target) + 11, and an extra space moves it later (the byte there is then
            # part of the version, CR, method or target, never an LF). One lookup, not a search of the read;
            # only then is it asked whether the line does begin with this method (a guard, never expected).
            self._line = None
            at = self._line_at
            if line[at] < 14:  # CR or LF first: empty lines before the line (RFC 9112 2.2), or a bare one
                at = after_empty_lines(line, at)
            try:
                misplaced = line[at + len(raw_method) + len(self._url) + 11] != 10
            except IndexError:  # the head ended before a version could: llhttp's HTTP/0.9 form, "GET /"
                misplaced = True
            if misplaced and line.startswith(raw_method, at):
                raise ProtocolError(400, MALFORMED_LINE)
            self._after = line  # a request pipelined behind this one is found from here (_locate_head)
            self._after_at = at
        keep_alive = parser.should_keep_alive()
        if keep_alive and not flags & CONNECTION_SEEN:
            # llhttp keeps a request alive without a Connection header only for HTTP/1.1 (it closes
            # 1.0, 0.9 and 2.0 by default), so the version is known without asking (which is slow).
            version = "1.1"
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                raise ProtocolError(505, f"HTTP version {version} is not supported")
            if flags & CHUNKED_BODY and version == "1.0":  # RFC 9112 6.1: faulty framing
                raise ProtocolError(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if not flags & HOST_SEEN and version == "1.1":
            raise ProtocolError(400, "Missing Host header")
        headers = self._headers
        if len(headers) > self.config.limit_request_fields:  # memory is bounded by the size check
            raise ProtocolError(431, "Too many request header fields")
        method = _method_name(raw_method) or raw_method.decode("ascii")
        url = self._url
        if url[0] != 47:  # not "/..."
            url = origin_form(url, headers)
        if 63 in url:  # "?"
            raw_path, _, query = url.partition(b"?")
            if 35 in query:  # "#": a fragment is not part of a request target (RFC 9112 3.2); never a value
                raise ProtocolError(400, "Invalid request target: a fragment (#) is not sent to the server")
        else:
            raw_path, query = url, b""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        if self.draining:
            keep_alive = False
        app = self.app
        routes = app.static_routes.get(path)  # the common case, one probe; params, 404, 405: resolve()
        route = None if routes is None else routes.get(method)
        values: Any = ()
        ex = Exchange(self, keep_alive)
        if route is None:
            route, values, error = app.resolve(method, path)
            if error is not None:  # stored only when there is one: the exchange keeps no dict otherwise
                ex.route_error = error
                if path == "*" and method == "OPTIONS":  # RFC 9110 9.3.7: about the server, answered here
                    route = None
                    ex.route_error = None
        # The peer is passed once known (asked for by an earlier request): request.client is then no call.
        req = ex.request = Request(ex, method, raw_path, query, path, headers, version, keep_alive, self._peer,
                                   self.scheme, route, values)
        # The request owns what was parsed; reset for the next head (an idle connection keeps nothing).
        self._url = b""
        self._headers = _NO_HEADERS
        self._flags = 0
        self._head_size = 0
        self._partial_line = 0
        self._head_started = False
        self.current = ex
        self.pipeline.append(ex)
        if self.state.on_request is not None:  # only with --proxy-headers or --limit-max-requests (server.py)
            self.state.on_request(req)
        observer = self.observer
        if self.access_log or observer is not None:  # the one clock stamp of this request
            ex.started = perf_counter()  # not loop.time(): uvloop's clock moves in whole milliseconds
        if flags & UPGRADE and parser.should_upgrade():
            if self._upgrade == b"h2c":  # RFC 9110 7.8: a server may ignore Upgrade; serve it over 1.1
                ex.keep_alive = False
                if flags & (HAS_LENGTH | CHUNKED_BODY):
                    # httptools ends an Upgrade request at its head and skips its body: the body is read
                    # past the head once the parser stops (data_received), so it must not end here.
                    self.ignored_upgrade = ex
            elif self._upgrade != b"websocket":
                raise ProtocolError(400, f"Upgrade to {self._upgrade.decode('latin-1')} is not supported")
            elif type(route) is not WebSocketRoute and not self._websocket_route(req, path):
                raise ProtocolError(400, "Upgrade to websocket is not supported here")
            elif len(self.pipeline) > 1:
                raise ProtocolError(400, "A WebSocket upgrade must not be pipelined behind other requests")
            elif version != "1.1" or method != "GET":  # RFC 6455 4.1 (and RFC 9110 7.8: no 101 for 1.0)
                raise ProtocolError(400, "A WebSocket handshake is an HTTP/1.1 GET")
            elif flags & CHUNKED_BODY or (flags & HAS_LENGTH and self._content_length):  # read as frames
                raise ProtocolError(400, "A WebSocket handshake must not carry a body")
            else:  # handed over in _on_upgrade, once httptools stops at the end of this head
                ex.keep_alive = False  # nothing after this head is HTTP: a 503 from shedding closes
                if observer is not None and not observer.admit(self, ex):  # the in-flight limit counts handshakes
                    return
                self.pipeline.pop()
                self.upgrade_to = ex
                self._upgrade = b""
                return
        self.stage = BODY  # with no body, on_message_complete comes next, in this same feed
        if flags & (HAS_LENGTH | CHUNKED_BODY):
            limit = self.config.max_body_size if route is None or route.max_body_size is UNSET else route.max_body_size
            ex.max_body_size = limit
            if line is not None:  # its wire bytes after the head, for _locate_head
                self._after_body = -1 if flags & CHUNKED_BODY else self._content_length
            if limit is not None and flags & HAS_LENGTH and self._content_length > limit:
                raise ProtocolError(413, f"Request body is larger than the limit of {limit} bytes")
            if flags & EXPECT_CONTINUE and version == "1.1":
                ex.expect_continue = True
            if flags & CHUNKED_BODY:  # its size lines are bounded (the head's end is where they start)
                self._chunk_lines = ChunkLines(self.config.limit_chunk_extension,
                                               self.config.limit_request_header_size, line or b"",
                                               line.find(b"\r\n\r\n", at) + 4 if line is not None else -1, 0)
            if flags & CHUNKED_BODY or self._content_length > 0:
                self._start_body(ex)
        if route is None and ex.route_error is None:  # OPTIONS * (above): the server's own answer
            self.answer(ex, Response(headers={"Allow": allow_all(app.routes)}))
            return
        if observer is not None:
            if not observer.admit(self, ex):  # realtime hook: shed, and answered
                return
            if observer.schedules:
                # Admission control: the handler runs in a task, never inline nor eagerly, so every
                # head of a read is admitted or refused, and its budget started, before any handler
                # runs: otherwise the queue hides in the socket buffer, where shedding cannot see it.
                ex.task = self.loop.create_task(self._run(ex))
                return
        if route is not None and route.inline and app.entry is None:
            self._run_inline(ex, route, values)
        elif EAGER_TASKS:
            loop = self.loop
            if loop.get_task_factory() is None:
                task = asyncio.Task(self._run(ex), loop=loop, eager_start=True)
            else:  # the loop's own factory (tracing, monitoring) makes every task, as on 3.11; it may be eager too
                task = loop.create_task(self._run(ex))
            if ex.task is None:  # else its first step began a streamed answer (answer_now): that task is the one
                ex.task = task
        else:
            ex.task = self.loop.create_task(self._run(ex))

    def _websocket_route(self, req: Request, path: str) -> bool:
        """An upgrade whose first match is an ordinary GET route: the WebSocket route behind it, if any."""
        route, values = self.app.resolve_websocket(path)
        if route is None:
            return False
        req.route = route
        req.path_values = values
        return True

    def on_body(self, body: bytes) -> None:
        ex = self.current
        if ex is None:
            return
        ex.received += len(body)
        self.expires_at = self.loop.time() + self.config.timeout_body  # an inactivity timer: any byte extends it
        limit = ex.max_body_size
        if limit is not None and ex.received > limit:
            raise ProtocolError(413, f"Request body is larger than the limit of {limit} bytes")
        if ex.status and (ex.streamed is None or ex.task is None or ex.task.done()):
            return  # answered, and no streamed answer is still being produced (it may read the body): discard
        if ex.chunks:
            ex.chunks.append(body)  # type: ignore[union-attr]
            if len(ex.chunks) > BODY_PIECES_HIGH:  # many small pieces: bounded by their number too
                self._block(BODY_BUFFER_FULL)
        else:
            ex.chunks = [body]
        self.buffered += len(body)
        if self.buffered > BODY_BUFFER_HIGH:
            self._block(BODY_BUFFER_FULL)
        ex.wake()

    def on_chunk_header(self) -> None:
        lines = self._chunk_lines
        if lines is not None and self.current is not None:
            lines.header(self.current.received)

    def on_chunk_complete(self) -> None:
        lines = self._chunk_lines
        if lines is not None and self.current is not None and lines.complete(self.current.received):
            self._chunk_lines = None  # the last chunk and its trailer section: the body is over
            end = lines.message_end()
            if end >= 0:  # for a request pipelined behind this one in the same read
                self._after = lines.data
                self._after_at = -1
                self._after_body = end
            else:
                self._after = None
                self._after_body = 0

    def _locate_head(self) -> None:
        """A head begins behind a finished request in this read: set ``_line`` where its line begins,
        from where that request's head began (``_after``), the end of its head and its body's length."""
        after = self._after
        body = self._after_body
        self._after = None
        self._after_body = 0  # set again only by a request with a body
        at = self._after_at
        if at < 0:  # its end was found while reading its body
            at = body
        elif body < 0:  # chunked, and its end not followed: the line stays unchecked
            return
        else:
            end = after.find(b"\r\n\r\n", at)  # llhttp ends a head only at CRLF CRLF (no bare LF)
            if end < 0:
                return
            at = end + 4 + body
        if at < len(after):
            self._line = after
            self._line_at = at

    def on_message_complete(self) -> None:
        ex = self.current
        self.current = None
        if ex is None:
            return
        if not ex.keep_alive:
            if ex is self.ignored_upgrade:  # httptools ends an Upgrade at its head: the body comes next
                self.current = ex
                return
            self._enter(CLOSING)  # RFC 9112 9.6: nothing after a request that closes is processed
        elif self.pipeline:
            self._enter(HANDLING)
        else:
            self.stage = IDLE  # its timeout is set once per read, in data_received
        if self._head_size:  # trailer fields were counted: the next head starts from nothing
            self._head_size = 0
        ex.complete = True
        ex.expect_continue = False
        if ex.waiter is not None:
            ex.wake()
        if self.buffered:
            self.buffered = 0
            self._unblock(BODY_BUFFER_FULL)

    # -- body flow, called by the Exchange -----------------------------------------------------------
    def body_wanted(self, ex: Exchange) -> None:
        """The handler is waiting for body bytes: ask for them (100 Continue) and let them in."""
        if ex.expect_continue:
            ex.expect_continue = False
            if ex.status:  # its answer has begun: a 1xx now would land inside it (RFC 9110 15.2)
                self._resume_body_rate()
            elif self.pipeline and self.pipeline[0] is ex:
                self._write_in_order(CONTINUE_100)
                self._resume_body_rate()
            else:
                ex.continue_due = True  # sent when earlier answers are out, to keep order
        self._unblock(BODY_BUFFER_FULL)

    def _write_in_order(self, data: bytes) -> None:
        """Write ``data`` for the exchange at the pipeline's head, after this read's answers: on 3.12+ a
        handler's first step (an eager task) runs inside the parser, before those answers are written at
        the read's end (data_received), and they belong to earlier requests."""
        wbuf = self.wbuf
        if self.in_feed and wbuf:
            wbuf.append(data)
            data = b"".join(wbuf)
            wbuf.clear()
        self.transport.write(data)  # type: ignore[union-attr]

    def body_consumed(self, ex: Exchange) -> None:
        if ex is self.current:
            self.buffered = 0
            self._unblock(BODY_BUFFER_FULL)

    # -- running handlers ---------------------------------------------------------------------------
    def _run_inline(self, ex: Exchange, route: Any, values: Any) -> None:
        """Run a handler that cannot suspend to completion, here, in a context of its own, no task."""
        context = _copy_context()
        request = ex.request
        try:
            if route.is_async:  # a coroutine that cannot suspend: its one step gives the result
                handler = route.handler  # loaded as an attribute: a method-call load of it is not specialized
                if not values:
                    coro = handler(request)
                elif route.positional:
                    coro = handler(request, *values)
                else:
                    coro = handler(request, **request.path_params)
                try:
                    result = context.run(_send, self.state.driver, coro)  # shared.one_step_driver
                except BaseException:
                    self.state.driver = one_step_driver()  # the handler's exception ended the driver
                    raise
            else:
                if not values:
                    result = context.run(route.handler, request)
                elif route.positional:
                    result = context.run(route.handler, request, *values)
                else:
                    result = context.run(route.handler, request, **request.path_params)
                if type(result) is CoroutineType:  # a plain def that returned a coroutine (a wrapper)
                    ex.context = context
                    ex.task = self.loop.create_task(self._finish(ex, result), context=context)
                    return
            stream = self._encode(ex, result)
        except Exception as exc:
            ex.context = context
            ex.task = self.loop.create_task(self._answer_error(ex, exc), context=context)
            return
        except asyncio.CancelledError:  # raised by the handler itself: nothing here cancelled it
            ex.context = context
            error = RuntimeError(f"handler {route.name} raised CancelledError")
            ex.task = self.loop.create_task(self._answer_error(ex, error), context=context)
            return
        if stream is not None:
            ex.context = context
            ex.task = self.loop.create_task(self._stream(ex, stream), context=context)

    async def _run(self, ex: Exchange) -> None:
        """A handler's task: run the handler (or the middleware chain, or the error), then answer."""
        observer = self.observer
        if observer is not None and observer.schedules and self.in_feed:
            # Admission control wants every head of a read admitted or refused before any handler runs;
            # an eager task factory (asyncio.eager_task_factory) began this task inside the parser.
            await asyncio.sleep(0)
        if ex.status:
            return  # answered before its task ran (bad input later in the same read, a deadline)
        if observer is not None:  # only the observer gives an exchange a budget
            if ex.deadline is not None and not observer.before_start(self, ex):
                return  # realtime hook: out of time before starting, already answered
            if observer.tracks_starts:  # realtime hook: admission control sees it start
                observer.started(ex)
        req = ex.request
        app = self.app
        route = req.route
        try:
            if app.entry is not None:
                result: Any = await app.entry(req)
            elif route is None:
                result = await app.handle_error(req, ex.route_error or HTTPError(404))
            else:
                values = req.path_values
                handler = route.handler
                if not values:
                    result = handler(req)
                elif route.positional:
                    result = handler(req, *values)
                else:
                    result = handler(req, **req.path_params)
                if route.is_async or type(result) is CoroutineType:
                    result = await result
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if ex.expired or (task is not None and task.cancelling()):
                raise  # our deadline (already answered) or server shutdown
            result = await app.handle_error(req, exc)  # the handler's own CancelledError: a bug, 500
        except Exception as exc:
            if ex.disconnected or ex.status:
                return  # nobody to answer, or already answered (e.g. 413)
            result = await app.handle_error(req, exc)
        if observer is not None:
            ex.disarm()  # the handler is done: its budget no longer applies
            if ex.expired:  # it swallowed the deadline's cancellation: the 503 or the fallback answers
                if req.holds_files:
                    await req.aclose()
                return
        self.answer(ex, result)
        if req.holds_files:  # spooled uploads are deleted once the handler is done
            await req.aclose()

    async def _finish(self, ex: Exchange, awaitable: Any) -> None:
        ex.context = None  # this task runs in it: see _answer_error
        if ex.status:
            awaitable.close()
            return
        try:
            result = await awaitable
        except Exception as exc:
            result = await self.app.handle_error(ex.request, exc)
        self.answer(ex, result)

    async def _answer_error(self, ex: Exchange, exc: BaseException) -> None:
        # This task runs in the handler's context: a task answer() makes from here (a stream) copies it.
        # Made in it (context=ex.context) under an eager task factory, it would enter a context already
        # entered: RuntimeError, and a task left pending for ever (no answer; shutdown hangs).
        ex.context = None
        if ex.status:
            return  # answered meanwhile: nothing left to say
        self.answer(ex, await self.app.handle_error(ex.request, exc), is_error=True)

    # -- answering: the one path every answer takes ---------------------------------------------------
    def can_answer(self, ex: Exchange) -> bool:
        """Whether ``ex`` still wants an answer and its client can still receive one."""
        return not ex.status and not ex.disconnected and self.transport is not None and not self.transport.is_closing()

    def answer(self, ex: Exchange, result: Any, *, is_error: bool = False) -> None:
        """Encode a handler's result and queue it in request order; a stream gets a task of its own.

        A result that cannot be encoded (a bug in the handler) is answered as an error; when the
        error's own answer cannot be encoded either (``is_error``), a plain 500 is.
        """
        if ex.status or self.transport is None:
            return  # answered already (a deadline's 503, a 413), or never connected
        if self.transport.is_closing():
            self.drop(ex)
            return
        try:
            response = self._encode(ex, result)
        except Exception as exc:
            if is_error:
                error_logger.error("Cannot encode the error answer to %r", ex.request, exc_info=exc)
                self._answer_head(ex, _PLAIN_500, b"Internal Server Error", 500, False)
            else:
                ex.task = self.loop.create_task(self._answer_error(ex, exc), context=ex.context)
            return
        if response is not None:
            ex.task = self.loop.create_task(self._stream(ex, response), context=ex.context)

    def _encode(self, ex: Exchange, result: Any) -> StreamResponse | None:
        """Encode and emit a finished result; return it instead if it is a stream to be sent."""
        # Close after this answer when asked to, when draining, or when a 100-continue went unanswered
        # (we never asked for the body, which may or may not come).
        close = not ex.keep_alive or self.draining or (ex.expect_continue and not ex.complete)
        finish = self.app.finish
        if finish is not None:  # finishers (CORS, compression) see every answer as a Response
            result = self._finished(ex, result, finish)
        kind = type(result)
        if kind is str:
            head, body, status = TEXT_200, result.encode("utf-8"), 200
        elif kind is dict or kind is list:
            head, body, status = JSON_200, orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), 200
        elif kind is bytes:
            head, body, status = OCTET_200, result, 200
        elif result is None:
            head, body, status = NO_CONTENT, b"", 204
        else:
            response = result if isinstance(result, Response) else to_response(result)
            if isinstance(response, StreamResponse):
                if type(response) is not FileResponse or response.content_length > INLINE_READ:  # type: ignore[operator]
                    return response
                body = response.read_small()  # a small file: answered here, no task (a pread is cheaper)
            else:
                body = response.body
            status = response.status
            close = close or response.wants_close()
            tail = self._tail(ex, close)
            if status in NO_BODY_STATUSES:
                data: Any = response.encode_head(b"", tail)
            else:
                size = len(body)
                data = response.encode_head(CONTENT_LENGTHS[size] if size < 1024 else content_length(size), tail)
                if ex.request.method != "HEAD":
                    data = (data, body) if len(body) >= LARGE_BODY else data + body
                else:  # the access log counts the body bytes sent: none
                    body = b""
            self._emit(ex, data, close, status, len(body))
            return None
        if close or self.observer is not None:
            tail = self._tail(ex, close)
        else:  # _tail's common case, inline: kept alive, no Server-Timing
            tail = self.clock.keep_alive if ex.request.http_version == "1.1" else self.clock.keep_alive_10
        size = len(body)
        if status == 204:
            data = b"".join((head, tail, b"\r\n"))
        elif ex.request.method == "HEAD":
            data = b"".join((head, tail, end_of_head(size)))
            size = 0  # the access log counts the body bytes sent: none
        elif size >= LARGE_BODY:
            data = (b"".join((head, tail, end_of_head(size))), body)
        else:
            data = b"".join((head, tail, END_OF_HEADS[size] if size < 1024 else end_of_head(size), body))
        self._emit(ex, data, close, status, size)
        return None

    def _finished(self, ex: Exchange, result: Any, finish: Any) -> Response:
        """``result`` as the app's finishers leave it. A plain 200 (str, bytes, dict, list) whose
        finishers can tell their lines without a Response (``App.finish_plain``: the usual small
        answer, which is not compressed) becomes a response of ready-made lines, with no headers
        object made, read or rendered."""
        plain = self.app.finish_plain
        kind = type(result)
        if plain is None or not (kind is str or kind is dict or kind is list or kind is bytes):
            return finish(ex.request, to_response(result))  # type: ignore[no-any-return]
        if kind is str:
            body, content_type, line = result.encode("utf-8"), TEXT_TYPE, TEXT_LINE
        elif kind is bytes:
            body, content_type, line = result, OCTET_TYPE, OCTET_LINE
        else:
            body, content_type, line = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), JSON_TYPE, JSON_LINE
        lines = plain(ex.request, content_type, len(body))
        if lines is None:
            return finish(ex.request, Response(body, 200, None, content_type))  # type: ignore[no-any-return]
        return RawResponse(body, 200, line + lines)

    def answer_head(self, ex: Exchange, head: bytes, body: bytes, status: int, close: bool) -> None:
        """Answer with a ready-made ``head`` (status line and headers, no Date/Server/Connection) and body.
        The app's finishers (CORS, say) see it as a ``Response``, as they see every answer."""
        if self.app.finish is not None:
            lines = b"".join(line + b"\r\n" for line in head.split(b"\r\n")[1:-1]
                             if not line.lower().startswith(b"content-length:"))  # the framing is the server's
            self.answer(ex, RawResponse(body, status, lines, close), is_error=True)
            return
        self._answer_head(ex, head, body, status, close)

    def _answer_head(self, ex: Exchange, head: bytes, body: bytes, status: int, close: bool) -> None:
        close = close or not ex.keep_alive or self.draining
        if ex.request.method == "HEAD":
            body = b""
        self._emit(ex, head + self._tail(ex, close) + b"\r\n" + body, close, status, len(body))

    def _tail(self, ex: Exchange, close: bool) -> bytes:
        if close:
            tail = self.clock.close
        else:
            tail = self.clock.keep_alive if ex.request.http_version == "1.1" else self.clock.keep_alive_10
        observer = self.observer
        if observer is not None and observer.server_timing:  # realtime hook: Server-Timing
            return observer.timing(ex) + tail
        return tail

    async def _stream(self, ex: Exchange, response: StreamResponse) -> None:
        """Send a streamed body, producing no faster than the client reads."""
        iterator = response.iterator
        req = ex.request
        sent = 0
        try:
            if self.pipeline and self.pipeline[0] is not ex:
                ex.turn = self.loop.create_future()
                await ex.turn
            transport = self.transport
            if ex.disconnected or transport is None or transport.is_closing():
                self.drop(ex)
                return
            http11 = req.http_version == "1.1"
            length = response.content_length  # known (a file): Content-Length framing, else chunked
            has_body = response.status not in NO_BODY_STATUSES
            chunked = http11 and has_body and length is None
            # as _encode: a 100-continue body never asked for may or may not come, so nothing after it can be read
            close = (not ex.keep_alive or self.draining or response.wants_close() or not (http11 or length is not None)
                     or (ex.expect_continue and not ex.complete))
            head_only = req.method == "HEAD" or not has_body
            if not has_body:
                framing = b""
            elif length is not None:
                framing = content_length(length)
            else:
                framing = CHUNKED if http11 else b""
            ex.status = response.status
            if self.observer is not None:  # realtime hook: answered once its head is out (a budget covers
                self.observer.finished(ex, ex.status)  # the time to the head, never a started stream)
            ex.close_delimited = not head_only and not framing  # only the connection's close ends the body
            ex.streamed = response
            self._write_in_order(response.encode_head(framing, self._tail(ex, close)))  # (an eager task factory)
            sent = 0
            if not head_only:
                if isinstance(response, FileResponse) and use_sendfile(self.loop, transport, response):
                    sent, rest = await self._send_file(response, transport)
                    ex.sent = sent
                    iterator = response.reader(rest)  # [] when sendfile sent it all; closes the file
                async for piece in iterator:
                    if type(piece) is str:
                        piece = piece.encode("utf-8")
                    if not piece:
                        continue
                    if self.write_paused:
                        await self._drain()
                    if transport.is_closing():
                        raise ClientDisconnected("client went away during a streamed response")
                    if length is not None and sent + len(piece) > length:  # never past the announced end
                        raise RuntimeError(f"the body is longer than the {length} bytes its Content-Length announced")
                    transport.write(chunk(piece) if chunked else piece)
                    sent += len(piece)
                    ex.sent = sent  # for the access log, should the client leave mid-stream (_release)
                if chunked:
                    transport.write(LAST_CHUNK)
                elif length is not None and sent != length:  # the message would be mis-framed: cut it
                    error_logger.error("Streamed %d bytes for %s %s, announced %d", sent, req.method, req.path, length)
                    self.drop(ex, sent)
                    transport.close()
                    return
        except ClientDisconnected:
            self.drop(ex, sent)
            return
        except asyncio.CancelledError:
            if not ex.ending:
                raise
            # Graceful shutdown ends an event stream (start_draining): whole, then the connection closes.
            if chunked and not transport.is_closing():
                transport.write(LAST_CHUNK)
            close = True
        except Exception as exc:
            if not isinstance(exc, StreamCut):  # a StreamCut's producer has said why
                error_logger.exception("Error while streaming the response to %s %s", req.method, req.path)
            # The body is cut short: the client must see an incomplete message. A close ends a
            # close-delimited body as if it were complete, so that one is reset instead.
            if ex.close_delimited and self.transport is not None:
                self._reset()
            self.drop(ex, sent)
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    error_logger.exception("Error closing the stream of %s %s", req.method, req.path)
        self._emit(ex, b"", close, response.status, sent)

    async def _send_file(self, response: FileResponse, transport: Any) -> tuple[int, list[Any]]:
        """A file's body by ``loop.sendfile`` (sendfile.py): (bytes sent, the rest to send by reading)."""
        try:
            return await send_plan(self.loop, transport, response, self._drain, self.config.timeout_write or None)
        finally:
            if self.read_blockers and transport.is_reading():  # sendfile resumes reading as it found it
                transport.pause_reading()

    async def _drain(self) -> None:
        while self.write_paused:
            if self.transport is None or self.transport.is_closing():
                raise ClientDisconnected("client went away during a streamed response")
            waiter = self.drain_waiter
            if waiter is None or waiter.done():
                waiter = self.drain_waiter = self.loop.create_future()
            await waiter

    # -- writing, in request order ------------------------------------------------------------------
    def _emit(self, ex: Exchange, data: bytes | tuple[bytes, bytes], close: bool, status: int, size: int) -> None:
        if self.observer is not None:  # realtime hook: no longer in flight; latency recorded
            self.observer.finished(ex, status)
        ex.status = status
        if self.buffered and ex is self.current:  # answered before its body was read: drop what came
            ex.chunks = []
            self.buffered = 0
            self._unblock(BODY_BUFFER_FULL)
        pipeline = self.pipeline
        stage = self.stage
        # The common cases, no bookkeeping: the only request outstanding, its connection staying open,
        # answered while the connection still reads it (on_message_complete sets the next stage), or from
        # its task once it was read (the connection goes idle: _flush's end, inline). They come second:
        # the jumps past the queueing code stay short, which Python 3.11 needs to specialize the tests.
        if not (len(pipeline) == 1 and pipeline[0] is ex and not close and type(data) is not tuple and (
                stage < HANDLING or (stage == HANDLING and not self.in_feed and not self.draining))):
            ex.out = data
            ex.close = close
            if pipeline and pipeline[0] is ex:
                if len(pipeline) == 1:
                    self._flush()
                elif not self.flush_pending:  # more answers are due this turn: send them in one write
                    self.flush_pending = True
                    self.loop.call_soon(self._flush)
        else:
            pipeline.clear()
            if self.in_feed:  # more requests may follow in this read: answer them in one write
                self.wbuf.append(data)  # type: ignore[arg-type]
            else:
                self.transport.write(data)  # type: ignore[union-attr, arg-type]
                if stage == HANDLING:
                    self.stage = IDLE
                    self._expire_at(self.loop.time() + self.config.timeout_keep_alive)
            if self.read_blockers & PIPELINE_FULL:
                self._unblock(PIPELINE_FULL)
        if self.access_log:
            route = ex.request.route
            if route is None or route.access_log:
                self.state.access.log(ex.request, status, size, ex.started)  # type: ignore[union-attr]
        # Answered: let go of the request. The request still reaches its exchange (for the body),
        # but no cycle is left, so reference counting frees both without the garbage collector.
        ex.request = None  # type: ignore[assignment]

    def _flush(self) -> None:
        self.flush_pending = False
        out = []
        if self.in_feed and self.wbuf:  # answers collected during this read go first, in the same write
            out.extend(self.wbuf)
            self.wbuf.clear()
        pipeline = self.pipeline
        transport = self.transport
        close = False
        while pipeline and pipeline[0].out is not None:
            ex = pipeline[0]
            if type(ex.out) is tuple:  # a large body: fed to the transport as it drains
                if out:
                    transport.write(b"".join(out))  # type: ignore[union-attr]
                    out = []
                if not self._feed_body(ex.out):
                    return  # the client is slow: resume_writing continues from here
            elif ex.out:
                out.append(ex.out)
            del pipeline[0]
            if ex.close:
                close = True
                break
        if transport is None or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])  # type: ignore[arg-type]
        elif out:
            transport.write(b"".join(out))  # type: ignore[arg-type]
        if close or (not pipeline and self.stage == CLOSING):
            self._enter(CLOSING)
            for ex in pipeline:  # requests behind an answer that closes: never answered, let them go
                self._release(ex)
            pipeline.clear()
            self._close_when_sent()
            return
        if pipeline:
            head = pipeline[0]
            if head.continue_due:
                head.continue_due = False
                if not head.status:  # not once its own answer has begun (body_wanted)
                    transport.write(CONTINUE_100)
                self._resume_body_rate()
            if head.turn is not None and not head.turn.done():
                head.turn.set_result(None)
        elif self.stage == HANDLING:
            if self.draining:
                self._enter(CLOSING)
                self._close_when_sent()
                return
            self._enter(IDLE)
        if self.read_blockers & PIPELINE_FULL and len(pipeline) <= self.config.limit_pipeline // 2:
            self._unblock(PIPELINE_FULL)
        if self.held is not None and len(pipeline) <= self.config.limit_pipeline // 2:
            self.loop.call_soon(self._feed_held)

    def _close_when_sent(self) -> None:
        """Close after the last answer, once its bytes have reached the client.

        Over plain TCP at once: the kernel goes on sending what it holds. asyncio's and uvloop's TLS
        transports instead give a closing connection TLS_SHUTDOWN_TIMEOUT (server.py, 5 s) for the
        flush and the client's close_notify together, then drop what is left in their buffers (up to
        half a megabyte in each of two): a client reading the end of a long answer slower than that
        had it cut short. So over TLS the close waits, checked on the connection's timer, until the
        transport and the kernel hold nothing; a client that takes nothing for ``timeout_write``
        (30 s when off) is closed all the same."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.scheme == "https" and waiting(transport):
            now = self.loop.time()
            count = unsent(transport)
            check = self.close_check
            if check is None or count != check[0]:
                self.close_check = (count, now)  # the client took some: wait on
            elif now - check[1] >= (self.config.timeout_write or 30.0):
                self.close_check = None
                transport.close()
                return
            self._wake_at(now + CLOSE_POLL)
            return
        self.close_check = None
        transport.close()

    def _feed_body(self, head_and_body: tuple[bytes, bytes]) -> bool:
        """Write a large body in slices while the transport accepts them; True once all is written.

        The transport then never holds more than about one slice beyond its high-water mark, so a
        client that stops reading costs a bounded amount of memory on every event loop (asyncio's
        transport copies whatever it could not send at once).
        """
        transport = self.transport
        view = self.body_view
        if view is None:
            transport.write(head_and_body[0])  # type: ignore[union-attr]
            view = self.body_view = memoryview(head_and_body[1])
            self.body_offset = 0
        size = len(view)
        while self.body_offset < size:
            if self.write_paused or transport.is_closing():  # type: ignore[union-attr]
                return False
            end = self.body_offset + LARGE_BODY
            transport.write(view[self.body_offset:end])  # type: ignore[union-attr]
            self.body_offset = end
        self.body_view = None
        return True

    def drop(self, ex: Exchange, sent: int = 0) -> None:
        """Forget an exchange whose answer can no longer be sent (``sent``: body bytes that went out)."""
        if self.access_log:
            self._log_unanswered(ex, sent)
        ex.status = ex.status or 499
        if self.observer is not None:  # realtime hook
            self.observer.finished(ex, ex.status)
        ex.out = b""
        ex.close = True
        if self.pipeline and self.pipeline[0] is ex:
            self._flush()

    def _release(self, ex: Exchange) -> None:
        """Let go of a request whose answer will never be written (its connection is gone or closing):
        its reader and its turn are woken (a stream waiting for its turn then ends, its generator
        closed), its budget disarmed, its line logged, and it is no longer in flight."""
        ex.disconnected = True
        ex.wake()
        ex.disarm()  # a budget's timer must not fire for a request nobody waits for
        if self.access_log:
            self._log_unanswered(ex, ex.sent)
        if self.observer is not None:  # realtime hook: not in flight
            self.observer.finished(ex, 499)
        if ex.turn is not None and not ex.turn.done():
            ex.turn.set_result(None)

    def _log_unanswered(self, ex: Exchange, size: int) -> None:
        """The access-log line of a request whose answer was not completed (its client left, or the
        answer was cut): the status sent, or 499 (nginx's "client closed request") when none was."""
        request = ex.request
        if request is None or ex.logged:  # logged with its answer (_emit), or already here
            return
        ex.logged = True
        route = request.route
        if route is None or route.access_log:
            self.state.access.log(request, ex.status or 499, size, ex.started)  # type: ignore[union-attr]

    # -- bad input ----------------------------------------------------------------------------------
    def _reject(self, status: int, reason: str) -> None:
        """Answer bad input with ``status`` after the answers already due, then close."""
        self._enter(CLOSING)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        ex = self.current
        self.current = None
        if ex is not None and ex.status:
            # Answered before its body went wrong: a second answer would be read as the next request's
            # (RFC 9110 15: one final response per request). Stop reading; close once the answer is out.
            ex.body_error = HTTPError(status, reason)
            ex.wake()
            self._block(PIPELINE_FULL)
            if not self.pipeline:  # written, or among this read's answers (written first)
                if self.wbuf:
                    transport.write(b"".join(self.wbuf))
                    self.wbuf.clear()
                transport.close()
            return
        head_only = False
        if ex is None:  # a head that never became a request: an exchange to carry the answer
            ex = Exchange(self, False)
            ex.request = Request(ex, "-", self._url, b"", "", self._headers, "1.1", False, None, self.scheme)
            self.pipeline.append(ex)
            # Once its target was read (on_url gave it a header list), the parser holds this head's method:
            # a HEAD refused before it became a request still gets the head alone.
            head_only = self._headers is not _NO_HEADERS and self.parser.get_method() == b"HEAD"
        ex.keep_alive = False
        ex.body_error = HTTPError(status, reason)
        ex.wake()
        observer = self.observer
        if (self.app.finish is None and (observer is None or not observer.server_timing)) \
                or not self._finished_error(ex, status, reason):
            data = self._error_bytes(status, reason)
            end = data.index(b"\r\n\r\n") + 4
            if head_only or ex.request.method == "HEAD":  # RFC 9110 9.3.2: the head alone
                data = data[:end]
            self._emit(ex, data, True, status, len(data) - end)  # the access log counts body bytes
        self._block(PIPELINE_FULL)  # stop reading: nothing more from this client is processed

    def _read_body_past_head(self, rest: bytes) -> None:
        """Read the body of an Upgrade request served as HTTP/1.1 (h2c, RFC 9110 7.8), which httptools
        skipped: a fresh parser is given a stand-in head with the same framing, then the bytes past the
        real head, so the body goes through the usual callbacks and limits. The connection closes after
        the answer (nothing after this request is HTTP/1.1 the client meant for us)."""
        ex = self.ignored_upgrade
        self.ignored_upgrade = None
        if ex is None or self.transport is None or self.transport.is_closing():
            return
        self.current = ex
        self.parser = httptools.HttpRequestParser(_BodyPastHead(self))
        if self._chunk_lines is not None:  # chunked: its size lines are bounded from the first byte of rest
            self._chunk_lines = ChunkLines(self.config.limit_chunk_extension, self.config.limit_request_header_size,
                                           b"", 0, 0)
            framing = b"Transfer-Encoding: chunked\r\n"
        else:
            framing = b"Content-Length: %d\r\n" % self._content_length
        self.parser.feed_data(b"POST / HTTP/1.1\r\nHost: body\r\nConnection: close\r\n" + framing + b"\r\n")
        if rest:
            self.data_received(rest)

    def _on_upgrade(self, data: bytes, offset: int) -> None:
        """httptools stopped at the end of an Upgrade request's head. An h2c upgrade was served as
        HTTP/1.1 and closes after its answer; a WebSocket takes the transport over (wsconn.py) with the
        bytes past the head. Nothing after the head is parsed as HTTP."""
        self._enter(CLOSING)
        ex = self.upgrade_to
        if ex is None or self.transport is None or self.transport.is_closing():
            return
        self.upgrade_to = None
        self.current = None
        if self.write_timer is not None:  # the session watches its own writes from now on
            self.write_timer.cancel()
            self.write_timer = None
        if self.read_blockers:
            self.read_blockers = 0
            self.transport.resume_reading()
        wbuf = self.wbuf
        if wbuf:  # this read's answers before the handshake's: its task may start at once (an eager task factory)
            self.transport.write(wbuf[0] if len(wbuf) == 1 else b"".join(wbuf))
            wbuf.clear()
        request = ex.request
        self.upgraded = start_websocket(self.transport, request, request.route, request.path_values, self.config,
                                        data[offset:], self._on_websocket_closed, self.write_paused, ex, self.state)

    def _on_websocket_closed(self) -> None:
        self.upgraded = None
        self.connection_lost(None)

    def _finished_error(self, ex: Exchange, status: int, reason: str) -> bool:
        """Answer the server's own error to a parsed request as any answer is encoded: through the app's
        finishers (a browser gets CORS headers on a 413) and with Server-Timing when it is on; False when
        there is no request head to go by or encoding fails (then the plain error goes out)."""
        if ex.request.method == "-":  # a head that never became a request
            return False
        try:
            stream = self._encode(ex, Response(reason or REASONS.get(status, "Error"), status, content_type=TEXT_TYPE))
        except Exception as exc:
            error_logger.error("Cannot finish the error answer %d to %r", status, ex.request, exc_info=exc)
            return False
        return stream is None

    def _error_bytes(self, status: int, reason: str) -> bytes:
        body = (reason or REASONS.get(status, "Error")).encode("utf-8", "replace")
        return b"%s%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (
            status_line(status), self.clock.close, len(body), body)

    # -- read pausing -----------------------------------------------------------------------------------
    def _block(self, reason: int) -> None:
        if not self.read_blockers and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            if self.body_rate is not None:  # not reading: the body's slowness is not the client's
                self.body_rate.stop(self.loop.time())
        self.read_blockers |= reason

    def _unblock(self, reason: int) -> None:
        if self.read_blockers & reason:
            self.read_blockers &= ~reason
            if not self.read_blockers and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
                self._resume_body_rate()

    def _resume_body_rate(self) -> None:
        """Reading again (or 100 Continue sent): the body's clocks run while a body is being read, and
        its timeout counts from now (a later expiry is re-queued when the earlier one fires)."""
        ex = self.current
        if self.stage == BODY and ex is not None and not (ex.expect_continue or ex.continue_due) \
                and not self.read_blockers:
            now = self.loop.time()
            self.expires_at = now + self.config.timeout_body
            rate = self.body_rate
            if rate is not None:
                rate.resume(now)
                self._wake_at(rate.due(now, ex.received) + 0.001)

    # -- shutdown -------------------------------------------------------------------------------------
    def start_draining(self) -> None:
        """Graceful shutdown: close now if idle, else after the answers outstanding."""
        self.draining = True
        if self.upgraded is not None:
            self.upgraded.shutdown()  # close 1001; the connection is forgotten when its TCP closes
            return
        for ex in self.pipeline:  # an event stream never ends by itself: end it now (_stream), whole
            task = ex.task
            if ex.streamed is not None and task is not None and not task.done() and _is_event_stream(ex.streamed):
                ex.ending = True
                task.cancel()
        if self.transport is None or self.stage == CLOSING:
            return
        if self.current is not None:  # its body is still arriving: finish reading it, then close
            self.current.keep_alive = False
        elif self.pipeline:
            self.pipeline[-1].keep_alive = False  # only the last answer may say "close"
            self._enter(CLOSING)
        elif self.stage == HEAD:  # connected, or mid-head: its request is on the way, so answer it
            when = self.loop.time() + DRAIN_GRACE  # (with Connection: close) if it comes soon
            if self.expires_at is None or when < self.expires_at:
                self._expire_at(when)
        else:
            self._enter(CLOSING)
            self._close_when_sent()  # over TLS the last answer may still be on its way to the client

    def outstanding_tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks still working on this connection's requests (handlers, streams)."""
        return [ex.task for ex in self.pipeline if ex.task is not None and not ex.task.done()]

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self) -> str:
        peer = self.peer()
        client = f"{peer[0]}:{peer[1]}" if peer else "-"
        return f"<Connection {client} stage={STAGE_NAMES[self.stage]} pipeline={len(self.pipeline)}>"
