"""Handlers without await run inline, and (where the interpreter allows) as plain functions.

``inline.plain_function`` rewrites a coroutine's code into an ordinary function; these tests pin down
that the result is the same function in every way a handler can observe.
"""
from __future__ import annotations

import asyncio
import traceback

import pytest

from aioserve import App, HTTPError
from aioserve import inline
from aioserve.inline import can_suspend, plain_function
from helpers import http_client, running

needs_plain = pytest.mark.skipif(not inline._WORKS, reason="this interpreter runs inline handlers as coroutines")


async def _no_await(request, n: int, scale: int = 10, *, sign: int = 1):
    return sign * scale * n


async def _awaits(request):
    await asyncio.sleep(0)


async def _async_for(request):
    async for _ in request.stream():
        pass


def test_can_suspend_finds_await_and_async_for():
    assert not can_suspend(_no_await)
    assert can_suspend(_awaits)
    assert can_suspend(_async_for)
    assert plain_function(_awaits) is None
    assert plain_function(_async_for) is None


@needs_plain
def test_plain_function_keeps_arguments_defaults_and_keyword_only():
    plain = plain_function(_no_await)
    assert plain is not None and not asyncio.iscoroutinefunction(plain)
    assert plain(None, 2) == 20
    assert plain(None, 2, 3) == 6
    assert plain(None, 2, sign=-1) == -20
    assert plain.__name__ == "_no_await" and plain.__qualname__ == "_no_await"


@needs_plain
def test_plain_function_keeps_closures_and_exception_handling():
    seen = []

    async def handler(request):
        seen.append(request)
        try:
            return {"first": seen[0], "missing": {}["x"]}
        except KeyError:
            return "handled"

    plain = plain_function(handler)
    assert plain("a") == "handled"
    assert seen == ["a"]


@needs_plain
def test_plain_function_traceback_points_at_the_handler_line():
    async def failing(request):
        raise LookupError("from the handler")  # the line the traceback must name

    plain = plain_function(failing)
    with pytest.raises(LookupError) as info:
        plain(None)
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.name == "failing"
    assert "the line the traceback must name" in last.line


def _inline_app() -> App:
    """Handlers without await: a result, an HTTPError, a crash, a CancelledError of their own."""
    app = App()

    @app.get("/ok/{n:int}")
    async def ok(request, n):
        return {"n": n}

    @app.get("/http-error")
    async def http_error(request):
        raise HTTPError(418, "teapot")

    @app.get("/crash")
    async def crash(request):
        raise RuntimeError("boom")

    @app.get("/cancelled")
    async def cancelled(request):
        raise asyncio.CancelledError()

    return app


async def test_inline_handlers_answer_results_errors_and_http_errors():
    app = _inline_app()
    route_ok = next(r for r in app.routes if r.name == "ok")
    assert route_ok.inline
    assert (route_ok.direct is not None) == inline._WORKS
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/ok/7")).json() == {"n": 7}
        r = await client.get("/http-error")
        assert r.status_code == 418 and "teapot" in r.text
        assert (await client.get("/crash")).status_code == 500
        assert (await client.get("/cancelled")).status_code == 500
        assert (await client.get("/ok/8")).json() == {"n": 8}  # the connection survived all of it


async def test_inline_handlers_still_run_as_coroutines_where_the_rewrite_is_off(monkeypatch):
    monkeypatch.setattr(inline, "_WORKS", False)  # as on an interpreter whose probe disagreed
    app = _inline_app()
    route = next(r for r in app.routes if r.name == "ok")
    assert route.inline and route.direct is None
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/ok/3")).json() == {"n": 3}
        assert (await client.get("/crash")).status_code == 500
