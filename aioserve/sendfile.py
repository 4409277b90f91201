"""A file's body through ``loop.sendfile``: the kernel copies it from the page cache to the socket.

Used by the connection for a ``FileResponse`` larger than 64 KiB over a plain TCP (or Unix) socket:
through ``loop.sendfile`` where the loop has a native one (asyncio's selector loop), and through
``os.sendfile`` on the socket where it has not (uvloop, whose ``sendfile`` is
``AbstractEventLoop.sendfile``, which raises ``NotImplementedError``; see the end of this note). It is
never used for TLS (the data must pass through the SSL object): there the file goes through its
bounded 64 KiB reads (``staticfiles._FileBody``).

The plan is walked in order: ``bytes`` pieces (multipart boundaries) are written to the transport,
``(offset, count)`` slices are sent in calls of up to ``MAX_SLICE`` bytes with ``fallback=False``, so nothing is
ever read into Python. Each call waits for the transport's buffer to empty and then for the kernel to
take the slice, so memory stays bounded by the socket buffer whatever the file size. A slice the
kernel refuses before sending a byte (``SendfileNotAvailableError``: an odd file system, or a client
already gone) hands the rest of the plan back to the caller, which sends it through the reads; a
client that resets mid-slice raises ``ClientDisconnected``.

Slices keep the write timeout meaningful, since the kernel reports no progress within one call: a
slice the client has not taken within ``timeout_write`` seconds means it stopped reading, and the
connection is aborted, as the transport's own write timeout would. The slice adapts to the client so
that a slow but steady reader is not taken for a stalled one: it starts at 64 KiB, doubles (up to
``MAX_SLICE``) while slices take under an eighth of the timeout, and halves (down to ``MIN_SLICE``,
about the 48 KiB a paused transport must drain) when one takes over a quarter of it.

On a loop without a native ``sendfile`` (uvloop) the same plan goes through ``os.sendfile`` on a
duplicate of the socket's descriptor (``_SocketWriter``): uvloop's transport writes at once when its
buffer is empty, so once the head has left the buffer the socket is ours until the body is sent (the
connection writes nothing else for this client meanwhile: later answers wait their turn). Each call
runs in a small thread pool, so a cold file's disk read never blocks the loop, sends at most
``MAX_SLICE`` bytes, and returns as soon as the socket buffer is full (the socket is non-blocking);
the loop then waits for the socket to be writable (``add_writer`` on the duplicate, which uvloop
allows where it forbids the transport's own descriptor), for at most ``timeout_write`` seconds.
Memory stays the kernel's socket buffer whatever the file. The duplicate keeps the socket open
while a call is in flight, so it is closed only once no thread can still use it: its number is never
reused under a call.
"""
from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from .errors import ClientDisconnected
from .staticfiles import INLINE_READ, FileResponse, Piece

MIN_SLICE = 16 * 1024  # bytes per loop.sendfile call (the unit the write timeout applies to) ...
FIRST_SLICE = 64 * 1024
MAX_SLICE = 1024 * 1024  # ... and the most: a fast client gets few calls
_NOT_NATIVE = asyncio.AbstractEventLoop.sendfile


def use_sendfile(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport, response: FileResponse) -> bool:
    """Whether to send ``response`` with ``loop.sendfile``: the loop can on this transport without
    reading the file itself, and the body is larger than a small file's (read on the loop: one pread
    and one write cost less than sendfile's pause, wait and resume)."""
    if response.content_length <= INLINE_READ or transport.get_extra_info("sslcontext") is not None:
        return False
    return type(loop).sendfile is not _NOT_NATIVE or _socket_fd(transport) is not None  # type: ignore[comparison-overlap]


async def send_plan(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.WriteTransport,
    response: FileResponse,
    drain: Callable[[], Awaitable[None]],
    timeout: float | None,
) -> tuple[int, list[Piece]]:
    """Send ``response.plan``; return (bytes sent, the rest of the plan to send by reading).

    ``drain`` returns once the transport is not paused; it is awaited before a ``bytes`` piece is written.
    """
    fd = response.fd
    if fd is None:
        raise RuntimeError("the file was closed before its body was sent")
    if type(loop).sendfile is _NOT_NATIVE:  # type: ignore[comparison-overlap]
        return await _send_by_fd(loop, transport, response, fd, drain, timeout)
    file = open(fd, "rb", buffering=0, closefd=False)  # what loop.sendfile takes: a binary file object
    plan = response.plan
    sent = 0
    step = FIRST_SLICE if timeout is not None else MAX_SLICE
    for i, piece in enumerate(plan):
        if type(piece) is bytes:
            await drain()
            if transport.is_closing():
                raise ClientDisconnected("client went away during a file response")
            transport.write(piece)
            sent += len(piece)
            continue
        offset, count = piece  # type: ignore[misc]
        while count:
            size = min(step, count)
            started = loop.time()
            try:
                done = await _send_slice(loop, transport, file, offset, size, timeout)
            except (asyncio.SendfileNotAvailableError, NotImplementedError, RuntimeError):
                # Nothing of this slice was sent: the reads take over from here (and notice a
                # client that is gone as any streamed answer does).
                return sent, [(offset, count), *plan[i + 1:]]
            sent += done
            if done < size:  # the file shrank after it was measured: the body cannot be completed
                raise OSError(f"{response.path}: file shorter than its Content-Length")
            offset += done
            count -= done
            if timeout is not None:
                took = loop.time() - started
                if took < timeout / 8:
                    step = min(step * 2, MAX_SLICE)
                elif took > timeout / 4:
                    step = max(step // 2, MIN_SLICE)
    return sent, []


async def _send_slice(loop: asyncio.AbstractEventLoop, transport: Any, file: Any, offset: int, size: int,
                      timeout: float | None) -> int:
    try:
        if timeout is None:
            done = await loop.sendfile(transport, file, offset, size, fallback=False)
        else:
            async with asyncio.timeout(timeout):
                done = await loop.sendfile(transport, file, offset, size, fallback=False)
    except TimeoutError:
        transport.abort()  # the client stopped reading: free what it holds
        raise ClientDisconnected("client stopped reading a file response") from None
    except ConnectionError as exc:  # reset or broken pipe after part of the slice went out
        raise ClientDisconnected("client went away during a file response") from exc
    return done  # type: ignore[no-any-return]


def _socket_fd(transport: asyncio.BaseTransport) -> int | None:
    sock = transport.get_extra_info("socket")
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return None
    fd = fileno()
    return fd if type(fd) is int and fd >= 0 else None


async def _send_by_fd(loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport, response: FileResponse,
                      fd: int, drain: Callable[[], Awaitable[None]], timeout: float | None) -> tuple[int, list[Piece]]:
    """The plan by ``os.sendfile`` on the socket itself, for a loop without a native sendfile."""
    plan = response.plan
    await drain()
    sock_fd = _socket_fd(transport)
    if transport.is_closing():
        raise ClientDisconnected("client went away during a file response")
    if sock_fd is None or transport.get_write_buffer_size():
        return 0, plan  # the head is still buffered: only the transport may write after it (the reads)
    writer = _SocketWriter(loop, transport, sock_fd, timeout)
    sent = 0
    try:
        for piece in plan:
            if type(piece) is bytes:
                await writer.write(piece)
                sent += len(piece)
                continue
            offset, count = piece  # type: ignore[misc]
            while count:
                done = await writer.sendfile(fd, offset, count)
                if done == 0:  # the file shrank after it was measured: the body cannot be completed
                    raise OSError(f"{response.path}: file shorter than its Content-Length")
                sent += done
                offset += done
                count -= done
    finally:
        writer.close()
    return sent, []


class _SocketWriter:
    """Writes to a duplicate of a transport's socket descriptor, off the loop, waiting on the loop."""

    __slots__ = ("loop", "transport", "fd", "timeout", "job", "full")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.WriteTransport, sock_fd: int,
                 timeout: float | None) -> None:
        self.loop = loop
        self.transport = transport
        self.fd: int | None = os.dup(sock_fd)  # non-blocking, as the transport's (one open file)
        self.timeout = timeout
        self.job: Future[int] | None = None
        self.full = False  # the last call filled the socket buffer: wait until it drains

    async def sendfile(self, fd: int, offset: int, count: int) -> int:
        return await self._call(os.sendfile, fd, offset, min(count, MAX_SLICE))

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            done = await self._call(os.write, view)
            view = view[done:]

    async def _call(self, func: Any, *args: Any) -> int:
        while True:
            if self.full:
                await self._writable()
            if self.transport.is_closing():
                raise ClientDisconnected("client went away during a file response")
            self.job = job = _pool().submit(func, self.fd, *args)
            try:
                done: int = await asyncio.wrap_future(job)
            except BlockingIOError:
                self.full = True
                continue
            except OSError as exc:  # EPIPE, ECONNRESET... after the client left
                if isinstance(exc, ConnectionError) or exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    raise ClientDisconnected("client went away during a file response") from exc
                raise
            self.full = done < (args[-1] if func is os.sendfile else len(args[0]))
            return done

    async def _writable(self) -> None:
        waiter = self.loop.create_future()
        self.loop.add_writer(self.fd, _wake, waiter)  # type: ignore[arg-type]
        try:
            if self.timeout is None:
                await waiter
            else:
                async with asyncio.timeout(self.timeout):
                    await waiter
        except TimeoutError:
            self.transport.abort()  # the client stopped reading: free what it holds
            raise ClientDisconnected("client stopped reading a file response") from None
        finally:
            self.loop.remove_writer(self.fd)  # type: ignore[arg-type]
        self.full = False

    def close(self) -> None:
        """Close the duplicate now, or when the call still in a thread returns."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        job = self.job
        if job is not None and not job.done():
            job.add_done_callback(lambda _: os.close(fd))
        else:
            os.close(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """The threads that make the sendfile calls, made on first use in each process."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="aioserve-sendfile"))
    return _POOL[1]


__all__ = ["MAX_SLICE", "MIN_SLICE", "send_plan", "use_sendfile"]
