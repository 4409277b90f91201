"""Accept connections in batches, so an overloaded server still refuses promptly.

Since libuv 1.45 (uvloop >= 0.18), a listening socket yields one ``accept()`` per loop iteration
(libuv/libuv#3696). When a loop iteration is long (handlers burning CPU), new connections then wait
in the kernel's accept queue, where no shedding can reach them: under overload most timeouts are
connections never accepted, and after the load stops a new client still waits seconds for the queue
to drain. This acceptor owns the listening socket instead: each time it is readable it accepts up to
``batch`` pending connections, and hands each to the loop (``connect_accepted_socket``), so every
queued client gets its request read, and answered (or refused) within a loop iteration or two.

Out-of-resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) are a capacity problem, not a reason to stop
serving: log, stop accepting for a moment, resume.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Callable

from .errors import error_logger


RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF = 0.1  # seconds without accepting after an out-of-resource error
WARN_EVERY = 10.0  # seconds between two warnings about it: a capacity problem, not news per retry

_last_warned = 0.0


def warn_out_of_resources(exc: object) -> None:
    """One warning every ``WARN_EVERY`` seconds while accept() keeps failing for lack of resources."""
    global _last_warned
    now = time.monotonic()
    if now - _last_warned >= WARN_EVERY:
        _last_warned = now
        error_logger.warning("accept() failed (%s): out of file descriptors or memory; backing off", exc)


class BatchAcceptor:
    """Duck-types the parts of ``asyncio.Server`` that ``Server`` uses: sockets, close, wait_closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], asyncio.Protocol], batch: int) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.batch = batch
        self.sockets = (sock,)
        self._pending: set[asyncio.Task] = set()
        self._reading = False
        self._closed = False
        self._nodelay = sock.family in (socket.AF_INET, socket.AF_INET6)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._resume()

    def _resume(self) -> None:
        if not self._closed and not self._reading:
            self.loop.add_reader(self.sock.fileno(), self._ready)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            self.loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _ready(self) -> None:
        for _ in range(self.batch):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in RESOURCE_ERRORS:
                    warn_out_of_resources(exc)
                    self._pause()
                    self.loop.call_later(BACKOFF, self._resume)
                    return
                raise
            conn.setblocking(False)
            if self._nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self.loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:  # reset before we got to it
            conn.close()

    def close(self) -> None:
        if self._closed:
            return
        self._pause()
        self._closed = True
        self.sock.close()

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening TCP socket, like ``loop.create_server`` makes for one address."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
