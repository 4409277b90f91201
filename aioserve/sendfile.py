"""A file's body through ``loop.sendfile``: the kernel copies it from the page cache to the socket.

Used by the connection for a ``FileResponse`` larger than 64 KiB when the loop has a native
``sendfile`` for the transport: asyncio's selector loop on a plain TCP (or Unix) socket. It is never used for TLS (the data
must pass through the SSL object) nor on uvloop, whose loop has no ``sendfile`` at all (it is
``AbstractEventLoop.sendfile``, which raises ``NotImplementedError``); there the file goes through
its bounded 64 KiB reads (``staticfiles._FileBody``).

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
"""
from __future__ import annotations

import asyncio
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
    return (response.content_length > INLINE_READ and type(loop).sendfile is not _NOT_NATIVE  # type: ignore[operator]
            and transport.get_extra_info("sslcontext") is None)


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


__all__ = ["MAX_SLICE", "MIN_SLICE", "send_plan", "use_sendfile"]
