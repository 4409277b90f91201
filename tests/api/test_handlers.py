"""How handlers run: plain ``def`` and ``async def`` without ``await`` inline, the rest in tasks.

Whatever the path, a handler runs in a context of its own (a ``ContextVar`` set by one request is never
seen by the next on the same keep-alive connection), and watching a server (metrics, Server-Timing)
never moves a handler from one path to another. Nothing rewrites a handler's code.
"""
from __future__ import annotations

import asyncio
import contextvars

import pytest

from aioserve import App, HTTPError
from aioserve.router import can_suspend
from tests.support import capture_logs, http_client, raw_connection, request_bytes, running

user: contextvars.ContextVar[str | None] = contextvars.ContextVar("user", default=None)


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


def test_handler_code_is_never_rewritten():
    app = App()
    code = _no_await.__code__
    app.get("/n/{n:int}")(_no_await)
    route = app.routes[0]
    assert route.inline and route.is_async
    assert route.handler is _no_await and _no_await.__code__ is code


def _paths_app() -> App:
    """The same results, errors and crashes, from a plain def, an inline async def and an awaiting one."""
    app = App()

    @app.get("/plain/{n:int}")
    def plain(request, n):
        return {"n": n, "path": "plain"}

    @app.get("/inline/{n:int}")
    async def inline(request, n):
        return {"n": n, "path": "inline"}

    @app.get("/task/{n:int}")
    async def task(request, n):
        await asyncio.sleep(0)
        return {"n": n, "path": "task"}

    @app.get("/plain-error")
    def plain_error(request):
        raise HTTPError(418, "teapot")

    @app.get("/plain-crash")
    def plain_crash(request):
        raise RuntimeError("boom")

    @app.get("/inline-crash")
    async def inline_crash(request):
        raise RuntimeError("boom")

    @app.get("/inline-cancelled")
    async def inline_cancelled(request):
        raise asyncio.CancelledError()

    @app.get("/plain-stopiteration")
    def plain_stopiteration(request):
        raise StopIteration("not a result")

    @app.get("/inline-stopiteration")
    async def inline_stopiteration(request):
        raise StopIteration("not a result")

    @app.get("/plain-bytes")
    def plain_bytes(request):
        return b"\x00\x01"

    @app.get("/plain-none")
    def plain_none(request):
        return None

    return app


async def test_plain_def_inline_and_task_handlers_answer_alike():
    app = _paths_app()
    routes = {r.name: r for r in app.routes}
    assert routes["plain"].inline and not routes["plain"].is_async
    assert routes["inline"].inline and routes["inline"].is_async
    assert not routes["task"].inline
    async with running(app) as server, http_client(server) as client:
        for kind in ("plain", "inline", "task"):
            assert (await client.get(f"/{kind}/7")).json() == {"n": 7, "path": kind}
        r = await client.get("/plain-error")
        assert r.status_code == 418 and "teapot" in r.text
        assert (await client.get("/plain-crash")).status_code == 500
        assert (await client.get("/inline-crash")).status_code == 500
        assert (await client.get("/inline-cancelled")).status_code == 500
        r = await client.get("/plain-bytes")
        assert r.content == b"\x00\x01" and r.headers["content-type"] == "application/octet-stream"
        assert (await client.get("/plain-none")).status_code == 204
        assert (await client.get("/plain/8")).json() == {"n": 8, "path": "plain"}  # the connection survived
        # inline coroutines share one driver per server (shared.one_step_driver); a crash ends it, and the
        # next inline handler, on this connection or another, still gets its own result
        for crash in ("/inline-crash", "/inline-cancelled"):
            assert (await client.get(crash)).status_code == 500
            assert (await client.get("/inline/9")).json() == {"n": 9, "path": "inline"}
        async with http_client(server) as other:
            assert (await other.get("/inline/10")).json() == {"n": 10, "path": "inline"}


async def test_a_stopiteration_raised_by_a_handler_is_a_500_naming_it():

    async with running(_paths_app()) as server, http_client(server) as client:
        with capture_logs("aioserve.error") as logs:
            assert (await client.get("/plain-stopiteration")).status_code == 500
            assert (await client.get("/inline-stopiteration")).status_code == 500
    texts = [r.exc_text or "" for r in logs.records]
    assert any("StopIteration" in text and "plain_stopiteration" in text for text in texts)
    # Python turns a StopIteration escaping a coroutine into a RuntimeError that names its cause.
    assert any("StopIteration" in text and "inline_stopiteration" in text for text in texts)


async def test_a_plain_def_that_returns_a_coroutine_is_awaited():
    app = App()

    async def real(request):
        await asyncio.sleep(0)
        return "wrapped"

    @app.get("/wrapped")
    def wrapper(request):  # a decorator's sync wrapper around an async handler
        return real(request)

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/wrapped")).text == "wrapped"


async def test_plain_def_handlers_take_the_body_through_middleware_and_run_inline_without_it():
    app = App()
    seen = []

    @app.get("/where")
    def where(request):
        seen.append(asyncio.current_task())
        return "ok"

    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/where")).text == "ok"
    assert seen == [None]  # inline: no task was made for it

    @app.middleware
    async def tag(request, call_next):
        response = await call_next(request)
        response.headers["x-tag"] = "1"
        return response

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/where")
        assert r.text == "ok" and r.headers["x-tag"] == "1"


# -- context isolation ------------------------------------------------------------------------------
def _context_app(middleware: bool) -> App:
    app = App()

    @app.get("/plain/set/{name}")
    def plain_set(request, name):
        user.set(name)
        return "set"

    @app.get("/inline/set/{name}")
    async def inline_set(request, name):
        user.set(name)
        return "set"

    @app.get("/task/set/{name}")
    async def task_set(request, name):
        await asyncio.sleep(0)
        user.set(name)
        return "set"

    @app.get("/plain/get")
    def plain_get(request):
        return {"user": user.get()}

    @app.get("/inline/get")
    async def inline_get(request):
        return {"user": user.get()}

    @app.get("/task/get")
    async def task_get(request):
        await asyncio.sleep(0)
        return {"user": user.get()}

    if middleware:
        @app.middleware
        async def passthrough(request, call_next):
            return await call_next(request)

    return app


@pytest.mark.parametrize("middleware", [False, True], ids=["no-middleware", "middleware"])
@pytest.mark.parametrize("setter", ["plain", "inline", "task"])
async def test_a_contextvar_set_by_one_request_is_not_seen_by_the_next(setter, middleware):
    async with running(_context_app(middleware)) as server, raw_connection(server) as conn:
        for getter in ("plain", "inline", "task"):
            # Pipelined on one connection, and one after the other: never the previous request's value.
            await conn.send(request_bytes("GET", f"/{setter}/set/alice") + request_bytes("GET", f"/{getter}/get"))
            first, second = await conn.read_responses(2)
            assert first.status == 200 and first.body == b"set"
            assert second.status == 200 and second.body == b'{"user":null}', (setter, getter)
            await conn.send(request_bytes("GET", f"/{setter}/set/bob"))
            assert (await conn.read_final_response()).body == b"set"
            await conn.send(request_bytes("GET", f"/{getter}/get"))
            assert (await conn.read_final_response()).body == b'{"user":null}', (setter, getter)
    assert user.get() is None  # nor does it reach the test's own context


# -- watching never changes scheduling --------------------------------------------------------------
def _where_app(**options) -> App:
    app = App(**options)

    @app.get("/where")
    async def where(request):
        return {"task": asyncio.current_task() is not None}

    @app.get("/where-plain")
    def where_plain(request):
        return {"task": asyncio.current_task() is not None}

    return app


@pytest.mark.parametrize("options", [{}, {"metrics": True}, {"server_timing": True}, {"metrics": True, "server_timing": True}],
                         ids=["plain", "metrics", "server-timing", "both"])
async def test_metrics_and_server_timing_leave_inline_handlers_inline(options):
    app = _where_app(server_timing=options.get("server_timing", False))
    if options.get("metrics"):
        app.enable_metrics()
    async with running(app) as server, http_client(server) as client:
        for path in ("/where", "/where-plain"):
            r = await client.get(path)
            assert r.json() == {"task": False}, (options, path)
            assert ("server-timing" in r.headers) == bool(options.get("server_timing"))
        if options.get("metrics"):
            metrics = (await client.get("/metrics")).text
            assert 'route="/where"' in metrics and 'route="/where-plain"' in metrics


async def test_admission_control_alone_moves_handlers_into_tasks():
    app = _where_app(deadline=5.0)
    async with running(app) as server, http_client(server) as client:
        assert (await client.get("/where")).json() == {"task": True}
        assert (await client.get("/where-plain")).json() == {"task": True}
