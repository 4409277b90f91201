"""Eager task start (Python 3.12+) must not change what goes on the wire.

On 3.12+ the connection starts a handler's task eagerly: its first step runs inside the parser callback,
while the answers to the earlier requests of the same read are still collected for the read's one write.
Anything the first step writes at once (a ``100 Continue``, a stream's head) must still follow them, and a
task factory the loop has (tracing, monitoring, ``asyncio.eager_task_factory``) must make the handler's task
as it does on 3.11. Each request batch below is one write, so the server reads it in one read.
"""
from __future__ import annotations

import asyncio
import contextlib
import sys
import weakref

import pytest

from aioserve import App, WebSocket, stream
from tests.support import raw_connection, running

pytestmark = pytest.mark.asyncio



def _eager_factory(loop, coro, **kwargs):
    """``asyncio.eager_task_factory``, taking what uvloop passes too (its ``eager_start``, which 3.13's refuses)."""
    kwargs.pop("eager_start", None)
    return asyncio.Task(coro, loop=loop, eager_start=True, **kwargs)


EAGER_FACTORY = _eager_factory if sys.version_info >= (3, 12) else None
needs_eager_factory = pytest.mark.skipif(EAGER_FACTORY is None, reason="eager tasks are 3.12+")

GET_A = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: %s\r\n\r\n")


@contextlib.contextmanager
def task_factory(factory):
    loop = asyncio.get_running_loop()
    before = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        yield
    finally:
        loop.set_task_factory(before)


def make_app() -> App:
    app = App()

    @app.get("/a")
    async def a(request):  # never suspends: answered inline, into the read's one write
        return "A"

    @app.post("/upload")
    async def upload(request):  # a task: on 3.12+ it asks for the body inside the parser
        return b"got " + await request.body()

    @app.get("/stream")
    async def numbers(request):
        async def gen():
            yield "1"
            yield "2"
        return stream(gen())

    @app.websocket("/ws")
    async def ws(socket: WebSocket):
        await socket.accept()
        await socket.close()

    return app


async def test_100_continue_follows_the_answers_before_it_in_the_same_read():
    """A request with ``Expect: 100-continue`` pipelined behind one answered in the same read: its handler
    asks for the body in its first step, and the 100 must come after the earlier answer (3.13 sent it first,
    so the client took "100 Continue" as the answer to GET /a)."""
    async with running(make_app()) as server, raw_connection(server) as conn:
        conn.write(GET_A + b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        first = await conn.read_response("GET")
        assert (first.status, first.body) == (200, b"A")
        interim = await conn.read_response("POST")
        assert interim.status == 100
        conn.write(b"xyz")
        final = await conn.read_response("POST")
        assert (final.status, final.body) == (200, b"got xyz")


async def test_handler_tasks_are_made_by_the_loops_task_factory():
    """A handler's task (here behind middleware, so never inline) comes from the loop's task factory, as
    on 3.11: on 3.13 it was made directly, so the factory never saw it."""
    made: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()

    def factory(loop, coro, **kwargs):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.add(task)
        return task

    app = App()

    @app.middleware
    async def passthrough(request, call_next):
        return await call_next(request)

    @app.get("/whose")
    async def whose(request):
        return {"from_factory": asyncio.current_task() in made}

    async with running(app) as server, raw_connection(server) as conn:
        with task_factory(factory):
            conn.write(b"GET /whose HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            for response in await conn.read_responses(2):
                assert (response.status, response.body) == (200, b'{"from_factory":true}')


@needs_eager_factory
async def test_stream_head_follows_earlier_answers_under_an_eager_task_factory():
    """With an eager task factory a stream's task runs its first step inside the parser: its head
    must still follow the answer to the request before it (3.13 wrote it first: GET /a got the stream)."""
    async with running(make_app()) as server, raw_connection(server) as conn:
        with task_factory(EAGER_FACTORY):
            conn.write(GET_A + b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n" + GET_A)
            first, second, third = await conn.read_responses(3)
        assert (first.status, first.body) == (200, b"A")
        assert (second.status, second.body, second.chunked) == (200, b"12", True)
        assert (third.status, third.body) == (200, b"A")


@pytest.mark.parametrize("eager", [False, True], ids=["default-factory", "eager-factory"])
async def test_websocket_handshake_answer_follows_earlier_answers(eager):
    """A handshake pipelined behind a request answered in the same read: the refusal (426, written as the
    transport is handed over) and the 101 (an eager handler's accept()) come after that answer."""
    if eager and EAGER_FACTORY is None:
        pytest.skip("eager tasks are 3.12+")
    async with running(make_app()) as server:
        for version, status in ((b"12", 426), (b"13", 101)):
            async with raw_connection(server) as conn:
                with task_factory(EAGER_FACTORY if eager else None):
                    conn.write(GET_A + HANDSHAKE % version)
                    first = await conn.read_response("GET")
                    assert (first.status, first.body) == (200, b"A"), version
                    second = await conn.read_response("GET")
                assert second.status == status, version
