"""ASGI apps the subprocess tests serve (``python -m aioserve tests.support.asgi_apps:NAME``).

Starlette apps, plus bare ASGI callables for the lifespan cases a framework does not produce
(no lifespan support at all)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


@asynccontextmanager
async def _greeting(app):
    yield {"greeting": "from lifespan"}


async def _count(request: Request):
    """The body's size, read as it arrives: the server must not hold the body."""
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return JSONResponse({"size": n})


async def _hello(request: Request):
    return PlainTextResponse(getattr(request.state, "greeting", "no lifespan"))


async def _scope(request: Request):
    s = request.scope
    return JSONResponse({"root_path": s["root_path"], "path": s["path"], "raw_path": s["raw_path"].decode()})


ROUTES = [Route("/", _hello), Route("/count", _count, methods=["POST"]), Route("/scope/{rest:path}", _scope)]

app = Starlette(routes=ROUTES, lifespan=_greeting)
"""Lifespan state in each scope; ``/count`` streams an upload; ``/scope/...`` shows root_path."""


@asynccontextmanager
async def _broken(app):
    raise RuntimeError("database unreachable")
    yield  # pragma: no cover


broken_lifespan = Starlette(routes=ROUTES, lifespan=_broken)
"""Its lifespan startup raises: the server must exit non-zero with one line naming the error."""


async def no_lifespan(scope, receive, send):
    """A bare ASGI app that knows only HTTP: a lifespan scope raises, as many small apps do."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope type {scope['type']}")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"plain asgi"})
