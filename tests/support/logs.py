"""Capturing log records (also from loggers that do not propagate) and the loop's exception handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Iterable, Iterator


class _ListHandler(logging.Handler):
    def __init__(self, sink: "LogCapture"):
        super().__init__(level=logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink._add(record)


class LogCapture:
    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def _add(self, record: logging.LogRecord) -> None:
        with self._lock:
            if id(record) in self._seen:
                return
            self._seen.add(id(record))
            self.records.append(record)

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]

    def by_logger(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name or r.name.startswith(name + ".")]

    def describe(self, records: Iterable[logging.LogRecord] | None = None) -> str:
        records = self.records if records is None else records
        return "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in records)


@contextlib.contextmanager
def capture_logs(*extra_loggers: str, level: int = logging.DEBUG) -> Iterator[LogCapture]:
    """Capture records from the root logger and from ``aioserve``/``asyncio``
    (directly, in case they do not propagate).  Levels are lowered for the
    duration so INFO access lines are produced, then restored."""
    capture = LogCapture()
    handler = _ListHandler(capture)
    names = ["", "aioserve", "aioserve.access", "aioserve.error", "asyncio", *extra_loggers]
    saved = []
    for name in dict.fromkeys(names):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        if name:
            logger.setLevel(level)
        logger.addHandler(handler)
    try:
        yield capture
    finally:
        for logger, old_level in saved:
            logger.removeHandler(handler)
            logger.setLevel(old_level)


@contextlib.contextmanager
def loop_exceptions(loop: asyncio.AbstractEventLoop) -> Iterator[list[dict]]:
    """Collect every call of the loop's exception handler for the duration of the block."""
    seen: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


def describe_contexts(contexts: list[dict]) -> str:
    return "\n".join(f"{c.get('message')}: {c.get('exception')!r}" for c in contexts)


class _RecordList(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def access_records() -> Iterator[list[logging.LogRecord]]:
    """The ``aioserve.access`` records written during the block (the logger at INFO meanwhile)."""
    logger = logging.getLogger("aioserve.access")
    records: list[logging.LogRecord] = []
    handler = _RecordList(records)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
