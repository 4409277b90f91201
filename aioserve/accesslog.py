"""The access log: one line per answered request, on the ``aioserve.access`` logger.

A WebSocket gets two: its handshake (``101``, or the refusal's status, with the handshake's time) and
its close (``"WEBSOCKET /path" <close code> - <time open>``).

Going through ``logging`` costs about 60 us a line (a LogRecord, a stack walk, a lock, a formatted
time and a write per line): more than the request itself. So when the line would only reach aioserve's
own stderr handler with its default format (no ``--log-config``, no handler or filter added), the line
is formatted here, byte for byte as that handler would, and the lines of one loop iteration are written
together, in pieces of at most ``PIPE_BUF`` so workers sharing a pipe never interleave mid-line. Anything
else (a JSON formatter, a file handler, a test's handler) gets real log records with ``client``,
``method``, ``path``, ``status``, ``bytes`` and ``duration_ms`` fields. Which way is decided again at the
first line of every loop iteration, so logging configured at runtime takes effect at once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from time import localtime, perf_counter, strftime
from time import time as wall_clock
from typing import TYPE_CHECKING

from .logconfig import LOG_FORMAT

if TYPE_CHECKING:
    from .request import Request

access_logger = logging.getLogger("aioserve.access")
WRITE_LIMIT = 4096  # PIPE_BUF on Linux: a write to a pipe up to this size is never split


class AccessLog:
    __slots__ = ("loop", "lines", "handler", "pid", "second", "stamp")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lines: list[str] = []  # formatted lines waiting for the end of this loop iteration
        self.handler: logging.StreamHandler | None = None  # set while the direct way is usable
        self.pid = os.getpid()
        self.second = -1
        self.stamp = ""

    def log(self, req: Request, status: int, size: int, started: float) -> None:
        """One line for an answered request; ``started`` is its ``perf_counter()`` stamp (0: unknown)."""
        if not access_logger.isEnabledFor(logging.INFO):
            return
        duration_ms = (perf_counter() - started) * 1000.0 if started else 0.0
        client = req.client
        host = f"{client[0]}:{client[1]}" if client else "-"
        # The target as sent (percent-encoded): a decoded path could carry a line break into the log.
        # A '"' (the parser lets it through) would end the quoted field early: it is logged as %22.
        target = _target(req)
        if not self.lines:  # the first line of this iteration: which way do lines go now?
            self.handler = default_handler_only()
        if self.handler is None:
            access_logger.info(
                '%s - "%s %s HTTP/%s" %d %d %.2fms', host, req.method, target, req.http_version, status,
                size, duration_ms,
                extra={"client": host, "method": req.method, "path": req.path, "status": status,
                       "bytes": size, "duration_ms": round(duration_ms, 3)},
            )
            return
        now = wall_clock()
        second = int(now)
        if second != self.second:  # logging.Formatter's default asctime, rebuilt once a second
            self.second = second
            self.stamp = strftime("%Y-%m-%d %H:%M:%S", localtime(second))
        if not self.lines:
            self.loop.call_soon(self.flush)
        self.lines.append(
            f'{self.stamp},{int((now - second) * 1000):03d} [{self.pid}] INFO aioserve.access: '
            f'{host} - "{req.method} {target} HTTP/{req.http_version}" {status} {size} {duration_ms:.2f}ms\n'
        )

    def log_websocket_close(self, req: Request, code: int, opened: float) -> None:
        """The close of a WebSocket (its handshake had its own line): ``WEBSOCKET`` in the method's
        place, the close code in the status's, and how long the socket was open (``opened``: the
        ``perf_counter()`` stamp of its 101)."""
        if not access_logger.isEnabledFor(logging.INFO):
            return
        duration_ms = (perf_counter() - opened) * 1000.0
        client = req.client
        host = f"{client[0]}:{client[1]}" if client else "-"
        target = _target(req)
        if not self.lines:
            self.handler = default_handler_only()
        if self.handler is None:
            access_logger.info(
                '%s - "WEBSOCKET %s" %d - %.2fms', host, target, code, duration_ms,
                extra={"client": host, "method": "WEBSOCKET", "path": req.path, "status": code,
                       "close_code": code, "duration_ms": round(duration_ms, 3)},
            )
            return
        now = wall_clock()
        second = int(now)
        if second != self.second:
            self.second = second
            self.stamp = strftime("%Y-%m-%d %H:%M:%S", localtime(second))
        if not self.lines:
            self.loop.call_soon(self.flush)
        self.lines.append(
            f'{self.stamp},{int((now - second) * 1000):03d} [{self.pid}] INFO aioserve.access: '
            f'{host} - "WEBSOCKET {target}" {code} - {duration_ms:.2f}ms\n'
        )

    def flush(self) -> None:
        """Write the lines collected so far (called once per loop iteration that logged, and at shutdown)."""
        lines, self.lines = self.lines, []
        handler = self.handler
        if not lines or handler is None:
            return
        text = lines[0] if len(lines) == 1 else "".join(lines)
        if len(text) <= WRITE_LIMIT:  # the usual iteration: one write (a line is far below the limit)
            pieces = [text]
        else:
            pieces = []
            piece: list[str] = []
            size = 0
            for line in lines:
                if size + len(line) > WRITE_LIMIT and piece:
                    pieces.append("".join(piece))
                    piece, size = [], 0
                piece.append(line)
                size += len(line)
            pieces.append("".join(piece))
        handler.acquire()
        try:
            for text in pieces:
                handler.stream.write(text)
                handler.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: as logging does, never fail a request
            pass
        finally:
            handler.release()


def _target(req: Request) -> str:
    """The request target as sent (path and query), for a quoted log field: a '"' in it becomes %22."""
    raw = req.raw_path
    query = req.query_string
    if query:
        raw = raw + b"?" + query
    if b'"' in raw:
        raw = raw.replace(b'"', b"%22")
    return raw.decode("latin-1")


def default_handler_only() -> logging.StreamHandler | None:
    """aioserve's own stderr handler, if it is the only thing an access record would reach, unfiltered
    and with the default format; else None (the line must then go through ``logging``)."""
    if access_logger.handlers or access_logger.filters or not access_logger.propagate:
        return None
    parent = access_logger.parent
    if parent is None or parent.name != "aioserve" or parent.propagate or parent.filters or len(parent.handlers) != 1:
        return None
    handler = parent.handlers[0]
    if (
        not getattr(handler, "aioserve_default", False)
        or type(handler) is not logging.StreamHandler
        or handler.filters
        or handler.level > logging.INFO
        or handler.formatter is None
        or type(handler.formatter) is not logging.Formatter
        or handler.formatter._fmt != LOG_FORMAT
        or handler.formatter.datefmt is not None
        or handler.formatter.converter is not time.localtime
    ):
        return None
    return handler
