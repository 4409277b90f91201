"""One upgraded WebSocket: the transport's protocol after the HTTP connection hands it over.

The framing, masking, UTF-8 of close reasons, size limits and permessage-deflate are the sans-IO
``websockets.server.ServerProtocol``'s (never a framer of our own): bytes in go to ``receive_data``,
frames come out of ``events_received``, and every ``send_*`` leaves bytes in ``data_to_send`` (a
message the handler sends is serialized by websockets' ``Frame.serialize``, the serializer ``send_text``
calls, without its wrappers). This module adds what the sans-IO layer leaves to its caller, each bounded:

    what                           bound
    the opening handshake          validated before the handler runs (426 / 400); answered on accept()
    bytes before accept()          PRE_ACCEPT_BUFFER, then reading pauses
    messages the handler has not   QUEUE_HIGH messages or max(ws_max_size, 64 KiB) bytes; reading pauses,
    read yet                       and resumes at QUEUE_LOW / half the bytes
    a message                      ws_max_size after decompression (the sans-IO layer: close 1009)
    a message in fragments         one bytearray of its bytes: its size, not its number of frames
    text                           UTF-8 checked fragment by fragment, code points may straddle (1007)
    sending                        send() waits while the transport is paused (pause_writing); frames
                                   go out in one write per loop turn, at once past FLUSH_AT unwritten
                                   (on uvloop, large frames as one writelines(): no join copy)
    pongs (and closes) to a peer   reading pauses while writing is paused: a peer that reads nothing gets
    that does not read             none of its frames read, so its pings cannot pile up pongs here
    reading                        into one shared buffer per thread (a BufferedProtocol), copied once
                                   into the sans-IO reader: no bytes object per read, no buffer per socket
    a silent peer                  ping every ws_ping_interval; no pong in ws_ping_timeout: close 1011
                                   (not counted while a full inbox pauses reading: it restarts on resume)
    the closing handshake          a peer that does not answer our close in ws_ping_timeout is cut; our
                                   close resumes reading paused by a full inbox, and drops the messages
                                   that arrive before the peer's reply, so that reply is read at once

The handler runs in its own task. ``start_websocket`` is the whole seam with the HTTP connection.

The session also answers to the server for its socket (``ServerState``): the handshake stays the
request it came as (counted in flight, under its deadline, timed) until it is answered, 101 or a
refusal; then the access log gets a line, and another at the close with how long the socket was open;
with metrics on, ``WebSocketStats`` counts open sockets and messages each way.
"""
from __future__ import annotations

import asyncio
import codecs
import logging
import os
import threading
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import EXTERNAL_CLOSE_CODES, Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import CLOSED, CONNECTING, OPEN, SEND_EOF
from websockets.server import ServerProtocol

from .errors import HTTPError, only
from .shared import WebSocketStats
from .websocket import WebSocket, WebSocketDisconnect
from .wire import REASONS

if TYPE_CHECKING:
    from .config import Config
    from .exchange import Exchange
    from .request import Request
    from .shared import ServerState

logger = logging.getLogger("aioserve.error")

PRE_ACCEPT_BUFFER = 64 * 1024  # bytes a client may send before the handshake is answered
# Unread messages at which reading pauses / resumes: above a client's usual pipelining depth (16), so a
# full window of small messages does not cost a pause and a resume (two epoll changes) every round.
QUEUE_HIGH, QUEUE_LOW = 64, 16
FLUSH_AT = 64 * 1024  # bytes of unsent frames at which send() writes at once instead of at the loop's turn
# Average payload bytes per frame from which a batch of frames goes to uvloop's writelines() (one
# writev, no copy) instead of being joined: below it a join of small frames is cheaper than an iovec each.
GATHER_AT = 1024
READ_BUFFER = 256 * 1024  # the read buffer every session of a thread's loop reads into (_read_buffer())
DEFAULT_CLOSE_TIMEOUT = 10.0  # when ws_ping_timeout is None
NORMAL, GOING_AWAY, INTERNAL_ERROR, ABNORMAL = 1000, 1001, 1011, 1006
TEXT, BINARY, CONT, PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG


def deflate_factory() -> ServerPerMessageDeflateFactory:
    """permessage-deflate that keeps no zlib state on an idle socket: no context takeover either way.

    With context takeover a socket keeps a compressor and a decompressor alive between messages,
    about 40 KiB even with small windows: that is 400 MB for 10,000 idle sockets. Without it the
    compressor exists only while one message is compressed (one at a time per loop) and the
    decompressor while one message arrives (RFC 7692 lets the server impose client_no_context_takeover).
    The price: each message is compressed on its own, so small similar messages compress less. The
    4 KiB windows and memLevel 5 keep the per-message set-up cheap and bound a message in progress.
    """
    return ServerPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True,
                                          server_max_window_bits=12, client_max_window_bits=12,
                                          compress_settings={"memLevel": 5})


def upgrade_required_response() -> bytes:
    """What a plain GET on a WebSocket route gets (the router's 426 endpoint says the same via the app)."""
    body = b"This is a WebSocket endpoint: upgrade to websocket\n"
    return (b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def start_websocket(
    transport: asyncio.Transport,
    request: Request,
    route: Any,
    values: Any,
    config: Config,
    leftover: bytes = b"",
    on_closed: Callable[[], None] | None = None,
    write_paused: bool = False,
    exchange: Exchange | None = None,
    state: ServerState | None = None,
) -> WebSocketSession:
    """Take over ``transport`` for the WebSocket ``request`` routed to ``route`` (a ``WebSocketRoute``).

    The connection calls this once the upgrade request's head is parsed, and stops using the transport:
    ``leftover`` is what it read past the head, ``on_closed`` is called once when the TCP connection is
    gone, ``write_paused`` says the transport is paused for writing now. ``exchange`` is the upgrade
    request's (its clock stamp, its place in flight, its budget) and ``state`` the server's (access log,
    real-time observer, WebSocket metrics). The returned session's ``shutdown()`` closes with 1001
    (graceful shutdown); ``abort()`` drops it at once.
    """
    session = WebSocketSession(transport, request, route, values, config, on_closed, write_paused)
    if exchange is not None and state is not None:
        session.account(exchange, state)
    transport.set_protocol(session)
    session.begin(leftover)
    return session


_buffers = threading.local()


def _read_buffer() -> memoryview:
    """The buffer this thread's sessions read into: one per thread, never per socket (idle memory).

    Sharing is safe because a loop runs in one thread and the transport calls ``get_buffer()``, reads,
    and calls ``buffer_updated()`` in one go, and ``buffer_updated()`` copies the bytes out at once."""
    buffer = getattr(_buffers, "view", None)
    if buffer is None:
        buffer = _buffers.view = memoryview(bytearray(READ_BUFFER))
    return buffer


def _is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, WebSocketDisconnect)


class WebSocketSession(asyncio.BufferedProtocol):
    """The sans-IO protocol driven by transport events, plus the handler's task and its inbox.

    A buffered protocol: the transport reads straight into ``_read_buffer()`` and the bytes are copied
    once, into the sans-IO reader, instead of first into a ``bytes`` object per read (the loop's) and
    then into the reader. A transport that calls ``data_received()`` (the test client's) works too.
    """

    __slots__ = (
        "loop", "transport", "config", "request", "route", "values", "on_closed", "ws", "socket", "task",
        "handshake", "state", "early", "inbox", "inbox_bytes", "inbox_high", "waiter", "read_paused", "read_held",
        "write_paused", "drain_waiter", "decoder", "pieces", "binary", "ping_handle", "ping_payload",
        "close_handle", "draining", "lost", "peer_eof", "_close_info", "exchange", "server", "stats", "opened_at",
        "unsent", "flush_handle", "out", "sendable", "gathers", "read_into", "we_closed",
    )

    def __init__(self, transport: asyncio.Transport, request: Request, route: Any, values: Any, config: Config,
                 on_closed: Callable[[], None] | None, write_paused: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.config = config
        self.request = request
        self.route = route
        self.values = values
        self.on_closed = on_closed
        self.ws = ServerProtocol(extensions=[deflate_factory()] if config.ws_per_message_deflate else None,
                                 max_size=config.ws_max_size)
        self.socket: WebSocket | None = None
        self.task: asyncio.Task[None] | None = None
        self.handshake: Any = None  # the prepared 101 response, sent by accept()
        self.early = bytearray()  # bytes received before accept()
        self.inbox: deque[str | bytes] = deque()
        self.inbox_bytes = 0
        self.inbox_high = max(config.ws_max_size, 64 * 1024)
        self.waiter: asyncio.Future[None] | None = None
        self.read_paused = False  # the handler's inbox is full
        self.read_held = False  # the peer does not read what we write (pause_writing)
        self.we_closed = False  # our close frame went first: what arrives until the peer's reply is dropped
        self.write_paused = write_paused
        self.drain_waiter: asyncio.Future[None] | None = None
        self.unsent = 0  # bytes sent by the handler and not yet written (send(), _write_out())
        self.out: list[bytes] = []  # the frames send() serialized, not yet written (_write_out())
        # send()'s one test: ws.state is OPEN (as of the last _write_out()), writing is not paused, the
        # connection is not lost; kept by _write_out(), pause_writing(), resume_writing(), connection_lost()
        self.sendable = False
        # uvloop's writelines() keeps the frames by reference and sends them in one writev (and pauses
        # the protocol past its high-water mark): no join, no copy. asyncio's joins, or (3.12's selector
        # transport) buffers without pausing, so there we join ourselves (_write_out()).
        self.gathers = type(self.loop).__module__.startswith("uvloop")
        self.read_into = _read_buffer()
        self.flush_handle: asyncio.Handle | None = None
        self.decoder: Any = None  # the incremental UTF-8 decoder of the text message being received
        self.pieces = bytearray()  # the fragments so far of the message being received (_fragment())
        self.binary = False
        self.ping_handle: asyncio.TimerHandle | None = None
        self.ping_payload: bytes | None = None
        self.close_handle: asyncio.TimerHandle | None = None
        self.draining = False
        self.lost = False
        self.peer_eof = False  # the client half-closed after frames, before accept(): fed after them
        self._close_info: tuple[int, str] | None = None
        # the server's accounting (account()): the upgrade request until answered, then the open socket
        self.exchange: Exchange | None = None
        self.server: ServerState | None = None
        self.stats: WebSocketStats | None = None  # only with metrics on
        self.opened_at = 0.0  # perf_counter() at the 101, when the access log wants the duration

    # -- the opening handshake ---------------------------------------------------------------------
    def begin(self, leftover: bytes) -> None:
        """Validate the handshake; if it is sound, start the handler (which answers it on accept())."""
        req = self.request
        target = req.raw_path + (b"?" + req.query_string if req.query_string else b"")
        head = [b"GET ", target, b" HTTP/1.1\r\n"]
        for name, value in req.raw_headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.ws.receive_data(b"".join(head))  # the documented sans-IO path: it parses the head itself
        events = self.ws.events_received()
        if leftover:
            self.early += leftover
        if not events or not isinstance(events[0], WsRequest):
            self._refuse_head()
            return
        version = req.headers.get("sec-websocket-version")
        if version is not None and version.strip() != "13":
            self._refuse(426, "Unsupported WebSocket version; this server speaks 13", {"Sec-WebSocket-Version": "13"})
            return
        response = self.ws.accept(events[0])
        if response.status_code != 101:
            self._send_response(response)
            return
        self.handshake = response
        self.socket = WebSocket(self, req, dict(zip(self.route.param_names, self.values)) if self.values else {})
        self.task = self.loop.create_task(self._run())

    def accept(self, subprotocol: str | None, headers: Any) -> None:
        response = self.handshake
        if response is not None and (self.lost or self.ws.state is not CONNECTING):
            raise WebSocketDisconnect(*self.close_info())  # the client left first: 1006
        if response is None or self.ws.state is not CONNECTING:
            raise RuntimeError("accept() called twice, or after the WebSocket was closed")
        if subprotocol is not None:
            if subprotocol not in self.socket.subprotocols:  # type: ignore[union-attr]
                raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client "
                                 f"(offered: {', '.join(self.socket.subprotocols) or 'none'})")  # type: ignore[union-attr]
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.ws.subprotocol = subprotocol
        if headers:
            items = headers.items() if hasattr(headers, "items") else headers
            for name, value in items:
                if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                    raise ValueError(f"invalid character (CR or LF) in handshake header {name!r}")
                response.headers[name] = value
        self.handshake = None
        self._send_response(response)
        if self.ws.state is OPEN:
            self._arm_ping()
            if self.early:
                data = bytes(self.early)
                self.early = bytearray()
                self._feed(data)
            if self.peer_eof:  # then the client's FIN: after its close frame, if it sent one
                self.ws.receive_eof()
                self._write_out()
                self._wake()
            elif self.read_paused and not self._inbox_full():
                self._resume_reading()

    def _refuse_head(self) -> None:
        """websockets could not parse the head: answer with its refusal (431, 414), or with a 400 where
        it wrote none (on any other parse error it only ends the stream), then close."""
        writes = self.ws.data_to_send()
        answer = writes[0] if writes and writes[0] else None
        if answer is None:  # its send_eof() is all there is: our answer goes before the close
            answer = self.ws.reject(400, "Failed to open a WebSocket connection: invalid handshake request.\n").serialize()
        if not self.transport.is_closing():
            self.transport.write(answer)
        self._closed_by_us()
        head, _, body = answer.partition(b"\r\n\r\n")
        self._answered(int(head[9:12]), len(body))

    def _refuse(self, status: int, text: str, headers: Any = None) -> None:
        """Answer the handshake with an HTTP error instead of 101, then close."""
        self.handshake = None
        response = self.ws.reject(status, text or REASONS.get(status, "Error"))
        for name, value in (headers or {}).items():
            response.headers[name] = value
        self._send_response(response)

    def _send_response(self, response: Any) -> None:
        server = self.config.server_header  # every answer carries Server, as the HTTP ones do (wire.py)
        if server and "Server" not in response.headers:
            response.headers["Server"] = server
        self.ws.send_response(response)
        self._write_out()
        self._answered(response.status_code, len(response.body or b""))
        if response.status_code != 101:
            self._closed_by_us()

    # -- transport events ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # set_protocol does not call it
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.read_into

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.read_into[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if self.ws.state is CONNECTING:
            self.early += data
            if len(self.early) > PRE_ACCEPT_BUFFER:
                self._pause_reading()
            return
        self._feed(data)

    def eof_received(self) -> bool:
        if self.early and self.handshake is not None and self.ws.state is CONNECTING \
                and self.transport.get_extra_info("sslcontext") is None:
            # A half-close after the handshake and some frames: they are read on accept(), then this
            # EOF (the transport stays open to answer). A client that sent nothing more is gone, and
            # so is one over TLS (asyncio's SSL transport cannot stay half-open: it closes anyway).
            self.peer_eof = True
            return True
        self.ws.receive_eof()
        self._write_out()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self.sendable = False
        if self.exchange is not None:
            self._answered(499)  # the client left before the handshake was answered
        elif self.opened_at:
            self._account_close()
        for handle in (self.ping_handle, self.close_handle):
            if handle is not None:
                handle.cancel()
        self.ping_handle = self.close_handle = None
        if self.ws.state is not CLOSED:
            self.ws.receive_eof()  # the sans-IO state becomes CLOSED (code 1006 if no close frame came)
        self._wake()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.draining and self.task is not None and not self.task.done():
            self.task.cancel()  # shutting down: nothing more can be said on this socket
        if self.on_closed is not None:
            on_closed, self.on_closed = self.on_closed, None
            on_closed()

    def pause_writing(self) -> None:
        """A peer that does not read is not read from either: the sans-IO layer answers every ping it
        sends with a pong, which would pile up here without bound."""
        self.write_paused = True
        self.sendable = False
        if not self.read_held:
            self.read_held = True
            if not self.read_paused and not self.transport.is_closing():
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.sendable = not self.lost and self.ws.state is OPEN
        if self.read_held:
            self.read_held = False
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- incoming frames ------------------------------------------------------------------------------
    def _feed(self, data: bytes | memoryview) -> None:
        ws = self.ws
        ws.receive_data(data)
        if self.we_closed:  # messages sent before the peer saw our close: dropped (bounded), its reply awaited
            ws.events_received()
            self._write_out()
            if ws.state is not OPEN:
                self._wake()
            return
        inbox = self.inbox
        queued = len(inbox)
        size = 0  # bytes of the whole messages queued here (added to inbox_bytes once, below)
        for frame in ws.events_received():
            opcode = frame.opcode
            if opcode is TEXT and frame.fin:  # a whole text message in one frame: one decode, no decoder
                try:
                    message: str | bytes = frame.data.decode()
                except UnicodeDecodeError as exc:
                    ws.fail(1007, f"invalid UTF-8 at position {exc.start}")
                    break
                inbox.append(message)
                size += len(message)
            elif opcode is BINARY and frame.fin:
                inbox.append(frame.data)
                size += len(frame.data)
            elif opcode is TEXT or opcode is BINARY:  # the first fragment of a fragmented message
                self.binary = opcode is BINARY
                self.decoder = None if self.binary else codecs.getincrementaldecoder("utf-8")()
                if not self._fragment(frame.data, frame.fin):
                    break
            elif opcode is CONT:
                if not self._fragment(frame.data, frame.fin):
                    break
            elif opcode is PONG:
                if self.ping_payload is not None and frame.data == self.ping_payload:
                    self.ping_payload = None
                    self._arm_ping()
        self.inbox_bytes += size
        arrived = len(inbox) - queued
        if arrived:
            if self.stats is not None:
                self.stats.messages_in += arrived
            if self._inbox_full():
                self._pause_reading()
        self._write_out()
        if arrived or ws.state is not OPEN:
            self._wake()

    def _fragment(self, data: bytes, fin: bool) -> bool:
        """Add one fragment of a fragmented message; False if the connection failed.

        The fragments go into one bytearray: memory follows the message's size (ws_max_size bounds
        it, in websockets' parser), never the number of its frames (an empty one costs nothing). A
        text message is checked fragment by fragment by the incremental decoder (fail fast, a code
        point may straddle fragments), whose output is dropped: the whole is decoded once, at the end.
        """
        pieces = self.pieces
        if not fin:
            if data:
                decoder = self.decoder
                if decoder is not None:
                    try:
                        decoder.decode(data)
                    except UnicodeDecodeError as exc:  # the decoder saw its pending bytes, then data
                        self.ws.fail(1007, f"invalid UTF-8 at position {len(pieces) - len(decoder.buffer) + exc.start}")
                        return False
                    pending = decoder.buffer
                    if len(pending) > 1 and pending[0] == 0xED and pending[1] > 0x9F:
                        # ED A0-BF starts a UTF-16 surrogate, never valid; CPython waits for one more byte
                        position = len(pieces) + len(data) - len(pending)
                        self.ws.fail(1007, f"invalid UTF-8 at position {position}")
                        return False
                pieces += data
            return True
        pieces += data
        self.pieces = bytearray()
        self.decoder = None
        if self.binary:
            message: str | bytes = bytes(pieces)
        else:
            try:
                message = pieces.decode()
            except UnicodeDecodeError as exc:
                self.ws.fail(1007, f"invalid UTF-8 at position {exc.start}")
                return False
        self.inbox.append(message)
        self.inbox_bytes += len(message)
        return True

    def _inbox_full(self) -> bool:
        if len(self.inbox) >= QUEUE_HIGH:
            return True
        # inbox_bytes counts what was queued since the inbox was last counted, never less than it holds
        # (receive() takes messages without subtracting): past the bound, count it exactly (<= QUEUE_HIGH
        # messages) before pausing on it.
        return self.inbox_bytes >= self.inbox_high and self._count_inbox() >= self.inbox_high

    def _count_inbox(self) -> int:
        """The exact bytes the inbox holds, which inbox_bytes bounds from above: counted only where a
        decision rests on it (pausing, resuming), not per message (at most QUEUE_HIGH of them)."""
        self.inbox_bytes = size = sum(map(len, self.inbox))
        return size

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self.read_paused and not self.transport.is_closing():
            self.read_paused = True
            if not self.read_held:
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.transport.is_closing() and not self.read_held:
                self.transport.resume_reading()
            if self.ping_payload is not None and self.ping_handle is None:
                self._arm_ping_timeout()  # its timeout ran out while we were not reading: a new one

    # -- what the WebSocket object calls -------------------------------------------------------------
    async def receive(self, end: bool = False) -> str | bytes:
        """The next message; raises WebSocketDisconnect once the connection is closing and the inbox empty
        (StopAsyncIteration with ``end``: what ``async for message in ws`` stops on)."""
        while True:
            inbox = self.inbox
            if inbox:
                message = inbox.popleft()  # inbox_bytes is left as it is: counted again when it matters
                if self.read_paused and len(inbox) <= QUEUE_LOW and self._count_inbox() <= self.inbox_high // 2:
                    self._resume_reading()
                return message
            if self.ws.state is CONNECTING and not self.lost:
                raise RuntimeError("receive() before accept()")
            if self.ws.state is not OPEN or self.lost:
                if end:
                    raise StopAsyncIteration
                code, reason = self.close_info()
                raise WebSocketDisconnect(code, reason)
            self.inbox_bytes = 0  # the inbox is empty: its count is exact again
            if self.out:
                # The handler is about to wait for the peer: what it sent goes out now, not at the next
                # turn of the loop (an echo's batch, written while its frames are still in the cache).
                self._write_out()
                handle = self.flush_handle
                if handle is not None:
                    handle.cancel()
                    self.flush_handle = None
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def send(self, data: str | bytes, as_text: bool = False) -> None:
        """Send a message: str as text, bytes as binary (or as text, already UTF-8, with ``as_text``)."""
        if not self.sendable:  # not open, writing paused, or the connection lost
            await self._wait_writable()
        # websockets' own Frame and serializer (extensions included: permessage-deflate), without the
        # send_text() -> send_frame() layers, whose only other work is the state check above and the
        # fragmentation flag (a whole message is never fragmented here): about 7% of an echo's CPU.
        if isinstance(data, str):
            frame = Frame(TEXT, data.encode())  # UTF-8; no codec name to look up
        elif as_text:
            frame = Frame(TEXT, data)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            frame = Frame(BINARY, data)
        else:
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}")
        self.out.append(frame.serialize(mask=False, extensions=self.ws.extensions))
        if self.stats is not None:
            self.stats.messages_out += 1
        # One write per turn of the loop for all a handler sent in it (an echo answers a whole batch of
        # messages in one step): a write is a system call; past FLUSH_AT bytes, at once, so the transport
        # sees the bytes and pause_writing() can hold the next send().
        self.unsent += len(data)
        if self.unsent >= FLUSH_AT:
            self._write_out()
            if self.flush_handle is not None:  # written already: the turn's flush would find nothing
                self.flush_handle.cancel()
                self.flush_handle = None
        elif self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self._flush)

    async def _wait_writable(self) -> None:
        """send()'s slow path: wait while the transport is paused; raise if the socket is not open."""
        if self.ws.state is CONNECTING:
            raise RuntimeError("send() before accept()")
        while self.write_paused and not self.lost:
            waiter = self.drain_waiter
            if waiter is None or waiter.done():
                waiter = self.drain_waiter = self.loop.create_future()
            await waiter
        if self.ws.state is not OPEN or self.lost:
            code, reason = self.close_info()
            raise WebSocketDisconnect(code, reason)

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Start the closing handshake (or refuse the handshake with 403 before accept).

        ValueError for what a close frame must not carry (RFC 6455 5.5, 7.4): a code outside
        1000-1003, 1007-1014 and 3000-4999 (websockets' own list), a reason over 123 bytes of UTF-8.
        Checked only when a close frame is sent: before accept the refusal is a 403 whatever the code
        (ASGI's ``websocket.close`` before accept), and once closing there is nothing to send."""
        ws = self.ws
        if ws.state is CONNECTING:
            if self.handshake is not None:
                self._refuse(403, "WebSocket connection refused")
            return
        if ws.state is OPEN:
            if not isinstance(code, int) or isinstance(code, bool) \
                    or code not in EXTERNAL_CLOSE_CODES and not 3000 <= code <= 4999:
                raise ValueError(f"close code {code!r} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999 "
                                 "(1004-1006 and 1015 are reserved, 1016-2999 unassigned; RFC 6455 7.4)")
            if not isinstance(reason, str):
                raise TypeError(f"a close reason is a str, not {type(reason).__name__}")
            if reason:
                size = len(reason.encode("utf-8"))
                if size > 123:
                    raise ValueError(f"a close reason is at most 123 bytes of UTF-8, got {size} bytes")
            ws.send_close(code, reason)
            self._write_out()
            self._arm_close_timeout()
            # The peer's reply must be read even if a full inbox paused reading: what arrives before it
            # is dropped, as the handler is done receiving (it still gets what was queued before).
            self.we_closed = True
            if self.read_paused:
                self._resume_reading()

    def close_info(self) -> tuple[int, str]:
        """(code, reason) of the close: the peer's close frame, else ours, else 1006."""
        if self._close_info is not None:
            return self._close_info
        ws = self.ws
        if ws.close_rcvd is not None:
            return ws.close_rcvd.code, ws.close_rcvd.reason
        if ws.close_sent is not None:
            return ws.close_sent.code, ws.close_sent.reason
        return ABNORMAL, ""

    @property
    def closed(self) -> bool:
        return self.lost or self.ws.state is not OPEN and self.ws.state is not CONNECTING

    # -- the handler --------------------------------------------------------------------------------
    async def _run(self) -> None:
        route, socket, values = self.route, self.socket, self.values
        observer = self.server.observer  # type: ignore[union-attr]
        exchange = self.exchange
        if observer is not None and exchange is not None and observer.tracks_starts:
            observer.started(exchange)  # realtime hook: admission control sees the handshake's handler start
        try:
            if not values:
                await route.websocket(socket)
            elif route.positional:
                await route.websocket(socket, *values)
            else:
                await route.websocket(socket, **socket.path_params)  # type: ignore[union-attr]
        except WebSocketDisconnect:
            pass
        except HTTPError as exc:
            if self.ws.state is CONNECTING and self.handshake is not None:
                detail = exc.detail if isinstance(exc.detail, str) else ""
                self._refuse(exc.status, detail, exc.headers)
                return
            self._fail_handler(exc)
            return
        except asyncio.CancelledError:
            if not self.lost:
                self._end(GOING_AWAY if self.draining else INTERNAL_ERROR)
            raise
        except Exception as exc:
            if not only(exc, _is_disconnect):  # a WebSocketDisconnect wrapped by task groups ends as a bare one
                self._fail_handler(exc)
                return
        self._end(NORMAL)

    def _fail_handler(self, exc: BaseException) -> None:
        req = self.request
        logger.error("Exception in WebSocket handler %s", req.path, exc_info=exc)
        self._end(INTERNAL_ERROR, refuse_status=500)

    def _end(self, code: int, refuse_status: int = 403) -> None:
        """The handler is done: refuse an unanswered handshake, or close an open socket with ``code``."""
        if self.ws.state is CONNECTING:
            if self.handshake is not None:
                self._refuse(refuse_status, "WebSocket connection refused" if refuse_status == 403 else "")
        elif self.ws.state is OPEN and not self.lost:
            self.close(code)

    # -- accounting with the server ---------------------------------------------------------------------
    def account(self, exchange: Exchange, state: ServerState) -> None:
        """Answer to the server for this socket. Until the handshake is answered, ``exchange`` stays a
        request in flight (the in-flight limit counts it) under its budget, which now ends in a 503
        from here; once answered it is neither, so no deadline ever covers an open WebSocket."""
        self.exchange = exchange
        self.server = state
        self.stats = state.websockets
        if exchange.deadline_timer is not None:
            exchange.disarm()
            exchange.arm(exchange.deadline, WebSocketSession._handshake_expired, self)  # type: ignore[arg-type]

    def _handshake_expired(self, exchange: Exchange) -> None:
        """The upgrade request's budget ran out before the handler accepted or refused: refuse with 503."""
        exchange.deadline_timer = None
        if self.exchange is not exchange or self.handshake is None:
            return
        exchange.expired = True
        retry_after = self.server.app.retry_after  # type: ignore[union-attr]
        self._refuse(503, "Deadline exceeded", {"Retry-After": str(retry_after)})
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _answered(self, status: int, size: int = 0) -> None:
        """The handshake is answered (101, or a refusal), or its client is gone (499)."""
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        state: ServerState = self.server  # type: ignore[assignment]
        exchange.disarm()
        exchange.status = status
        if state.observer is not None:
            state.observer.finished(exchange, status)
        if state.access is not None and self.route.access_log:
            state.access.log(self.request, status, size, exchange.started)
        if status == 101:
            self.opened_at = perf_counter()
            if self.stats is not None:
                self.stats.open += 1

    def _account_close(self) -> None:
        """The open socket's TCP connection is gone: the access log's close line, the open gauge."""
        if self.stats is not None:
            self.stats.open -= 1
        access = self.server.access  # type: ignore[union-attr]
        if access is not None and self.route.access_log:
            access.log_websocket_close(self.request, self.close_info()[0], self.opened_at)

    # -- keep-alive and the closing handshake ---------------------------------------------------------
    def _arm_ping(self) -> None:
        interval = self.config.ws_ping_interval
        if interval and not self.lost:
            if self.ping_handle is not None:
                self.ping_handle.cancel()
            self.ping_handle = self.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self.ping_handle = None
        if self.ws.state is not OPEN or self.lost:
            return
        self.ping_payload = os.urandom(4)
        self.ws.send_ping(self.ping_payload)
        self._write_out()
        self._arm_ping_timeout()

    def _arm_ping_timeout(self) -> None:
        timeout = self.config.ws_ping_timeout
        if timeout and not self.lost:
            self.ping_handle = self.loop.call_later(timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self.ping_handle = None
        if self.read_paused:
            # Reading is paused by the handler's backlog (the inbox): the pong may be waiting unread
            # in the kernel, so the peer cannot be judged. _resume_reading() gives it a new timeout.
            return
        if self.ping_payload is not None and self.ws.state is OPEN and not self.lost:
            self.ws.fail(INTERNAL_ERROR, "keepalive ping timeout")
            self._write_out()
            self._wake()

    def _arm_close_timeout(self) -> None:
        if self.close_handle is None and not self.lost:
            timeout = self.config.ws_ping_timeout or DEFAULT_CLOSE_TIMEOUT
            self.close_handle = self.loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self.close_handle = None
        if not self.lost:
            self.transport.abort()

    # -- output ------------------------------------------------------------------------------------
    def _write_out(self) -> None:
        """Write every frame the sans-IO layer holds, in one call; its end of stream closes the TCP connection."""
        # Every call that can change the sans-IO state (receive_data, fail, send_close, send_response,
        # receive_eof) is followed by this method, so send() reads this flag, not the state property.
        self.sendable = self.ws.state is OPEN and not self.write_paused and not self.lost
        writes = self.ws.data_to_send()
        if self.out:  # send()'s frames come first: whatever the sans-IO layer holds was queued after them
            writes = self.out + writes
            self.out = []
        unsent, self.unsent = self.unsent, 0
        if not writes or self.transport.is_closing():
            return
        eof = SEND_EOF in writes  # as the server, we close the TCP connection after the data before it
        if eof:
            writes = writes[:writes.index(SEND_EOF)]
        if len(writes) == 1:
            self.transport.write(writes[0])
        elif self.gathers and unsent >= GATHER_AT * len(writes):
            self.transport.writelines(writes)  # uvloop: one writev of the frames as they are (4 KiB echo: -1 copy)
        elif writes:
            # One joined write, not writelines(): CPython 3.12's selector transport buffers what
            # writelines() cannot send without ever calling pause_writing, so a client that does not
            # read would grow the buffer without bound (caught by the tight-loop send test on 3.12).
            self.transport.write(b"".join(writes))
        if eof:
            self._closed_by_us()

    def _flush(self) -> None:
        self.flush_handle = None
        self._write_out()

    def _closed_by_us(self) -> None:
        """Close the transport once its buffer is written; a peer that never reads it is cut later."""
        if not self.transport.is_closing():
            self.transport.close()
        self._arm_close_timeout()

    # -- shutdown ----------------------------------------------------------------------------------
    def shutdown(self, code: int = GOING_AWAY) -> None:
        """Graceful shutdown: close with 1001 (the handler's ``receive()`` raises WebSocketDisconnect)."""
        self.draining = True
        if self.ws.state is CONNECTING:
            if self.handshake is not None:
                self._refuse(503, "Server is shutting down")
        elif self.ws.state is OPEN:
            self.close(code, "server shutting down")
        self._wake()

    def abort(self) -> None:
        self.draining = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport.abort()
