"""The response side of a connection: run the handler, encode its result, write answers in order.

``Responder`` is mixed into ``HttpProtocol`` (protocol.py), which owns the connection's state; this
module is everything that happens after a request head is parsed: the handler runs (inline when it
cannot suspend, else in a task), its result becomes bytes (ready-made heads for the common results),
and answers leave strictly in request order: a finished answer waits in the pipeline until those
before it are written, answers finished in the same read go out in one ``write``, a large body is fed
to the transport as it drains, and a streamed body is produced no faster than the client reads.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import orjson

from .app import to_response
from .deadlines import cancelled as _rt_cancelled
from .deadlines import expired_before_start as _rt_expired
from .errors import ClientDisconnected, HTTPError
from .request import Request
from .response import Response, StreamResponse
from .stages import BODY_BUFFER_FULL, CLOSING, HANDLING, IDLE, LARGE_BODY, PIPELINE_FULL
from .wire import (
    CHUNKED,
    CONTINUE_100,
    JSON_200,
    LAST_CHUNK,
    NO_BODY_STATUSES,
    NO_CONTENT,
    OCTET_200,
    TEXT_200,
    chunk,
    content_length,
    end_of_head,
)

error_logger = logging.getLogger("aioserve.error")

# Python 3.12+ runs a new task's first step at once; a handler that never suspends then finishes
# without a trip through the event loop. 3.11 has no safe equivalent, so it gets a plain task.
EAGER_TASKS = sys.version_info >= (3, 12)


class Responder:
    """Mixin for ``HttpProtocol``: its state lives in the protocol's slots."""

    __slots__ = ()

    # -- running the handler ---------------------------------------------------------------------
    def _run_inline(self, req: Request, route: Any) -> None:
        """Run a handler that cannot suspend (no await in it) to completion, here, without a task."""
        values = req._values
        direct = route.direct  # the handler's code as a plain function (inline.py), where possible
        call = direct if direct is not None else route.handler
        try:
            if not values:
                result = call(req)
            elif route.positional:
                result = call(req, *values)
            else:
                result = call(req, **req.path_params)
            if direct is None:  # a coroutine that cannot suspend: its one step gives the result
                coro = result
                try:
                    coro.send(None)
                except StopIteration as done:
                    result = done.value
                else:  # unreachable for a coroutine without await; fail loudly rather than hang
                    coro.close()
                    raise RuntimeError(f"inline handler {route.name} suspended")
            stream = self._respond(req, result)
        except Exception as exc:
            req._task = self.loop.create_task(self._handle_error(req, exc))
            return
        except asyncio.CancelledError:  # raised by the handler itself: nothing here cancelled it
            error = RuntimeError(f"handler {route.name} raised CancelledError")
            req._task = self.loop.create_task(self._handle_error(req, error))
            return
        if stream is not None:
            req._task = self.loop.create_task(self._stream(req, stream))

    async def _handle_error(self, req: Request, exc: Exception) -> None:
        result = await self.app.handle_error(req, exc)
        if not req._status and self.transport is not None and not self.transport.is_closing():
            stream = self._respond(req, result)
            if stream is not None:
                await self._stream(req, stream)

    async def _handle(self, req: Request) -> None:
        app = self.app
        if req._deadline is not None and _rt_expired(self, req):  # realtime hook: out of time before starting
            return
        try:
            if app.entry is not None:
                result: Any = await app.entry(req)
            elif req.route is None:
                result = await app.handle_error(req, req._error or HTTPError(404))
            elif req._values:
                route = req.route
                if route.positional:
                    result = await route.handler(req, *req._values)
                else:
                    result = await route.handler(req, **req.path_params)
            else:
                result = await req.route.handler(req)
        except asyncio.CancelledError as exc:  # realtime hook: deadline/shutdown re-raise; else a 500
            result = await _rt_cancelled(self, req, exc)
        except Exception as exc:
            if req._disconnected or req._status:
                return  # nobody to answer, or already answered (e.g. 413)
            result = await app.handle_error(req, exc)
        if req._timer is not None:  # realtime hook: the handler is done, disarm its deadline
            req._timer.cancel()
            req._timer = None
        if req._status or self.transport is None:
            return
        if self.transport.is_closing():
            self._drop(req)
            return
        try:
            stream = self._respond(req, result)
        except Exception as exc:  # a result that cannot be encoded: a bug in the handler
            stream = self._respond(req, await app.handle_error(req, exc))
        if stream is not None:
            await self._stream(req, stream)

    def _respond(self, req: Request, result: Any) -> StreamResponse | None:
        """Encode a finished result; return it instead if it is a stream to be sent by ``_stream``."""
        # Close after this answer when asked to, when draining, or when a 100-continue went unanswered
        # (we never asked for the body, which may or may not come).
        close = not req.keep_alive or self.draining or (req._expect_continue and not req._complete)
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
                return response
            status = response.status
            body = response.body
            close = close or response.wants_close()
            tail = self._tail(req, close)
            if status in NO_BODY_STATUSES:
                data = response.encode_head(b"", tail)
            else:
                data = response.encode_head(content_length(len(body)), tail)
                if req.method != "HEAD":
                    data = (data, body) if len(body) >= LARGE_BODY else data + body
            self._emit(req, data, close, status, len(body))
            return None
        tail = self._tail(req, close)
        size = len(body)
        if status == 204:
            data = b"".join((head, tail, b"\r\n"))
        elif req.method == "HEAD":
            data = b"".join((head, tail, end_of_head(size)))
        elif size >= LARGE_BODY:
            data = (b"".join((head, tail, end_of_head(size))), body)
        else:
            data = b"".join((head, tail, end_of_head(size), body))
        self._emit(req, data, close, status, size)
        return None

    def _tail(self, req: Request, close: bool) -> bytes:
        if close:
            tail = self.clock.close
        else:
            tail = self.clock.keep_alive if req.http_version == "1.1" else self.clock.keep_alive_10
        if self.rt is not None and self.rt.server_timing:  # realtime hook: Server-Timing
            return self.rt.timing(req) + tail
        return tail

    async def _stream(self, req: Request, response: StreamResponse) -> None:
        """Send a streamed body, producing no faster than the client reads."""
        iterator = response.iterator
        try:
            if self.pipeline and self.pipeline[0] is not req:
                req._turn = self.loop.create_future()
                await req._turn
            transport = self.transport
            if req._disconnected or transport.is_closing():
                self._drop(req)
                return
            http11 = req.http_version == "1.1"
            close = not req.keep_alive or self.draining or response.wants_close() or not http11
            head_only = req.method == "HEAD" or response.status in NO_BODY_STATUSES
            framing = CHUNKED if http11 and response.status not in NO_BODY_STATUSES else b""
            req._status = response.status
            transport.write(response.encode_head(framing, self._tail(req, close)))
            sent = 0
            if not head_only:
                async for piece in iterator:
                    if type(piece) is str:
                        piece = piece.encode("utf-8")
                    if not piece:
                        continue
                    if self.write_paused:
                        await self._drain()
                    if transport.is_closing():
                        raise ClientDisconnected("client went away during a streamed response")
                    transport.write(chunk(piece) if http11 else piece)
                    sent += len(piece)
                if http11:
                    transport.write(LAST_CHUNK)
        except ClientDisconnected:
            self._drop(req)
            return
        except Exception:
            error_logger.exception("Error while streaming the response to %s %s", req.method, req.path)
            self._drop(req)
            if self.transport is not None:
                self.transport.close()  # the body is cut short: the client must see an incomplete message
            return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    error_logger.exception("Error closing the stream of %s %s", req.method, req.path)
        self._emit(req, b"", close, response.status, sent)

    async def _drain(self) -> None:
        while self.write_paused:
            if self.transport is None or self.transport.is_closing():
                raise ClientDisconnected("client went away during a streamed response")
            waiter = self.drain_waiter
            if waiter is None or waiter.done():
                waiter = self.drain_waiter = self.loop.create_future()
            await waiter

    # -- writing, in request order ------------------------------------------------------------------
    def _emit(self, req: Request, data: bytes | tuple[bytes, bytes], close: bool, status: int, size: int) -> None:
        if self.rt is not None:  # realtime hook: no longer in flight; latency recorded
            self.rt.on_emit(req, status)
        req._status = status
        if req is self.request and self.buffered:  # answered before its body was read: drop what came
            req._chunks = []
            self.buffered = 0
            self._unblock(BODY_BUFFER_FULL)
        pipeline = self.pipeline
        if len(pipeline) == 1 and pipeline[0] is req and not close and self.stage < HANDLING and type(data) is not tuple:
            # The common case: the only request outstanding, answered while its connection stays
            # open and is still reading (on_message_complete sets the next stage). No bookkeeping.
            pipeline.clear()
            if self.in_feed:  # more requests may follow in this read: answer them in one write
                self.wbuf.append(data)
            else:
                self.transport.write(data)
            if self.read_blockers & PIPELINE_FULL:
                self._unblock(PIPELINE_FULL)
        else:
            req._out = data
            req._close = close
            if pipeline and pipeline[0] is req:
                if len(pipeline) == 1:
                    self._flush()
                elif not self.flush_pending:  # more answers are due this turn: send them in one write
                    self.flush_pending = True
                    self.loop.call_soon(self._flush)
        if self.access_log:
            self._log_access(req, status, size)

    def _flush(self) -> None:
        self.flush_pending = False
        out = []
        if self.in_feed and self.wbuf:  # answers collected during this read go first, in the same write
            out.extend(self.wbuf)
            self.wbuf.clear()
        pipeline = self.pipeline
        transport = self.transport
        close = False
        while pipeline and pipeline[0]._out is not None:
            req = pipeline[0]
            if type(req._out) is tuple:  # a large body: fed to the transport as it drains
                if out:
                    transport.write(b"".join(out))
                    out = []
                if not self._feed_body(req._out):
                    return  # the client is slow: resume_writing continues from here
            elif req._out:
                out.append(req._out)
            del pipeline[0]
            if req._close:
                close = True
                break
        if transport is None or transport.is_closing():
            return
        if len(out) == 1:
            transport.write(out[0])
        elif out:
            transport.write(b"".join(out))
        if close or (not pipeline and self.stage == CLOSING):
            self.stage = CLOSING
            self.deadline = None
            pipeline.clear()
            transport.close()
            return
        if pipeline:
            head = pipeline[0]
            if head._continue_due:
                head._continue_due = False
                transport.write(CONTINUE_100)
            if head._turn is not None and not head._turn.done():
                head._turn.set_result(None)
        elif self.stage == HANDLING:
            if self.draining:
                self.stage = CLOSING
                transport.close()
                return
            self._enter(IDLE)
        if self.read_blockers & PIPELINE_FULL and len(pipeline) <= self.config.limit_pipeline // 2:
            self._unblock(PIPELINE_FULL)

    def _feed_body(self, head_and_body: tuple[bytes, bytes]) -> bool:
        """Write a large body in slices while the transport accepts them; True once all is written.

        The transport then never holds more than about one slice beyond its high-water mark, so a
        client that stops reading costs a bounded amount of memory on every event loop (asyncio's
        transport copies whatever it could not send at once).
        """
        transport = self.transport
        view = self.body_view
        if view is None:
            transport.write(head_and_body[0])
            view = self.body_view = memoryview(head_and_body[1])
            self.body_offset = 0
        size = len(view)
        while self.body_offset < size:
            if self.write_paused or transport.is_closing():
                return False
            end = self.body_offset + LARGE_BODY
            transport.write(view[self.body_offset:end])
            self.body_offset = end
        self.body_view = None
        return True

    def _drop(self, req: Request) -> None:
        """Forget a request whose answer can no longer be sent."""
        req._status = req._status or 499
        if self.rt is not None:  # realtime hook
            self.rt.on_emit(req, req._status)
        req._out = b""
        req._close = True
        if self.pipeline and self.pipeline[0] is req:
            self._flush()

    # -- access log -----------------------------------------------------------------------------------
    def _log_access(self, req: Request, status: int, size: int) -> None:
        if req.route is not None and not req.route.access_log:
            return
        self.state.access.log(req, status, size)
