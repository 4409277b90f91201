"""Exceptions that are part of the public API."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

#: Where aioserve reports what went wrong (handlers' exceptions, internal errors); defined once here.
error_logger = logging.getLogger("aioserve.error")


class HTTPError(Exception):
    """Raise from a handler to end the request with ``status``.

    ``detail`` becomes the body: a ``str`` as text, a ``dict``/``list`` as JSON, ``None`` the reason phrase.
    """

    def __init__(self, status: int, detail: Any = None, headers: Mapping[str, str] | None = None) -> None:
        if not 100 <= int(status) <= 999:
            raise ValueError(f"HTTPError status must be a 3-digit code, not {status!r}")
        self.status = int(status)
        self.detail = detail
        self.headers = dict(headers) if headers else None
        super().__init__(status, detail)

    def __repr__(self) -> str:
        return f"HTTPError({self.status}, detail={self.detail!r})"


class StreamCut(Exception):
    """Raised by a streamed answer's producer to end the message short on purpose: the connection cuts
    it (the client sees an incomplete message) and logs nothing, whoever cut it having said why."""


class ClientDisconnected(Exception):
    """The client went away before the request was complete.

    Raised where a handler can see it: reading the body (``body()``, ``json()``, ``stream()``) and inside a
    streaming response's generator. Handlers are never cancelled because of a disconnect; see README.
    """


class ProtocolError(Exception):
    """Bad input from the client; carries the status it deserves (400, 413, 414, 431, 505...)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(status, reason)


def only(exc: BaseException, test: Callable[[BaseException], bool]) -> bool:
    """``test`` holds for ``exc``, or ``exc`` is an exception group (a task group wraps what its tasks
    raise in one, nested groups for nested task groups) and it holds for every exception inside."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only(inner, test) for inner in exc.exceptions)
    return test(exc)
