"""A user's ``asyncio.eager_task_factory`` (Python 3.12+) must not change what the server does.

With it every task the connection makes runs its first step inside ``create_task``: a task made from
inside the context it is given (``context=``) fails to enter it, and admission control sees a handler run
before the rest of its read is admitted. uvloop 0.23 cannot make any task with that factory (it passes
``eager_start``, which the factory refuses), so there the server refuses to start, in one line.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

import aioserve
from aioserve import App, stream
from aioserve.config import SettingError
from tests.support import current_loop_name, raw_connection, request_bytes, running
from tests.support.apps import burn_then_quick_app

pytestmark = [pytest.mark.asyncio,
              pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")]


@contextlib.contextmanager
def eager_factory():
    """The loop's task factory is ``asyncio.eager_task_factory`` in the block (asyncio's loop only)."""
    if current_loop_name() == "uvloop":
        pytest.skip("uvloop 0.23 cannot use asyncio.eager_task_factory (see the test of the start-up line)")
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        yield
    finally:
        loop.set_task_factory(before)


def wrapper_app() -> App:
    app = App()

    @app.get("/stream")
    def wrapped_stream(request):  # a plain def returning a coroutine (a decorator's wrapper): run by a task
        async def inner():
            async def gen():
                yield "1"
                yield "2"
            return stream(gen())
        return inner()

    @app.get("/bad")
    def wrapped_bad(request):
        async def inner():
            return object()  # not an answer: 500
        return inner()

    return app


@pytest.mark.parametrize("path, status, body", [("/stream", 200, b"12"), ("/bad", 500, None)])
async def test_a_wrappers_coroutine_is_answered(path, status, body):
    """A plain ``def`` returning a coroutine runs in a task in the handler's context; its stream (or its
    error's answer) got a task made in that same context, which an eager task cannot enter again:
    RuntimeError, no answer, and a task pending for ever (the loop's shutdown hung on it)."""
    async with running(wrapper_app()) as server, raw_connection(server) as conn:
        with eager_factory():
            conn.write(request_bytes("GET", path) * 2)
            responses = await conn.read_responses(2, timeout=3)
    for response in responses:
        assert response.status == status
        if body is not None:
            assert response.body == body


async def test_shedding_sees_every_head_of_a_read_first():
    """Six pipelined CPU-only requests in one read, limit 2: two answers and four 503s. An eager task
    factory ran each handler as its head was parsed, so all six were served."""
    app = App(limit_in_flight=2)

    @app.get("/burn")
    async def burn(request):
        return str(sum(range(20000)))  # CPU only, no await

    async with running(app) as server, raw_connection(server) as conn:
        with eager_factory():
            conn.write(request_bytes("GET", "/burn") * 6)
            statuses = [response.status for response in await conn.read_responses(6)]
    assert statuses == [200, 200, 503, 503, 503, 503]


async def test_a_budget_spent_while_queued_is_a_503_without_running():
    """/quick (20 ms budget) queued behind /burn (100 ms of CPU) in the same read: it must start after its
    budget and be answered 503 unrun. An eager task factory started it inside the parser, so it ran."""
    app, ran = burn_then_quick_app()

    async with running(app) as server, raw_connection(server) as conn:
        with eager_factory():
            conn.write(request_bytes("GET", "/burn") + request_bytes("GET", "/quick"))
            burnt, quick_answer = await conn.read_responses(2)
    assert (burnt.body, quick_answer.status, ran) == (b"burnt", 503, [])


def _refusing_factory(loop, coro, **kwargs):
    raise TypeError("this factory makes no task")


async def test_a_task_factory_the_loop_cannot_use_fails_the_start_in_one_line():
    """A task factory that cannot make tasks on the loop (uvloop 0.23 on Python 3.13 passes ``eager_start``
    to ``asyncio.eager_task_factory``, which refuses it) would fail every connection's
    task, an error logged per connection and no answer. The start fails instead, in one line, and the
    factory is taken off so that the loop can still be shut down. A refusing factory stands for it here,
    on both loops and every version."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(_refusing_factory)
    try:
        with pytest.raises(SettingError, match="task factory cannot make a task on this loop"):
            server = await aioserve.serve(App(), host="127.0.0.1", port=0, access_log=False)
            await server.shutdown(timeout=1)
        assert loop.get_task_factory() is None
    finally:
        loop.set_task_factory(None)
