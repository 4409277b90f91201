"""A streamed answer may begin before its request's body has arrived (RFC 9110 allows an answer at any
time), and its producer may go on reading that body: a transformation that streams back what it reads,
an ASGI app that starts its response and then calls receive(). The body that arrives after the head
went out must reach the reader, whole and in order, never be dropped as if the request were done.

The client sends the head, waits for the answer's first piece, then sends the body a piece at a time,
each after the echo of the one before: only a server that reads while it streams can answer that.
"""
from __future__ import annotations

import asyncio

import pytest

from aioserve import App, StreamResponse
from tests.support import raw_connection, running

PIECES = [b"alpha;", b"beta;", b"gamma;"]
SIZE = sum(map(len, PIECES))
HEAD = (f"POST /upper HTTP/1.1\r\nHost: t\r\nContent-Length: {SIZE}\r\n\r\n").encode()


def native_app() -> App:
    app = App()

    @app.post("/upper")
    async def upper(request):
        async def produce():
            yield b"ready;"
            async for piece in request.stream():
                yield piece.upper()
            yield b"end;"

        return StreamResponse(produce(), content_type="text/plain")

    return app


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ready;", "more_body": True})
    while True:
        message = await receive()
        if message["type"] != "http.request":
            await send({"type": "http.response.body", "body": b"disconnect;", "more_body": False})
            return
        if message.get("body"):
            await send({"type": "http.response.body", "body": message["body"].upper(), "more_body": True})
        if not message.get("more_body"):
            break
    await send({"type": "http.response.body", "body": b"end;", "more_body": False})


def decoded(raw: bytes) -> tuple[bytes, bool]:
    """The chunked payload in ``raw`` (an answer's bytes so far): what is complete, and whether it ended."""
    if b"\r\n\r\n" not in raw:
        return b"", False
    rest = raw.split(b"\r\n\r\n", 1)[1]
    payload = b""
    while True:
        size_line, sep, after = rest.partition(b"\r\n")
        if not sep:
            return payload, False
        size = int(size_line, 16)
        if size == 0:
            return payload, True
        if len(after) < size + 2:
            return payload, False
        payload += after[:size]
        rest = after[size + 2:]


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Answer:
    """What has arrived of one streamed answer on ``conn`` (a 100 Continue before it is let through)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.raw = b""

    @property
    def final(self) -> bytes:
        return self.raw.removeprefix(CONTINUE)

    async def until(self, marker: bytes) -> tuple[bytes, bool]:
        """Read until ``marker`` is in the decoded payload, or the answer ended: (payload, ended)."""
        while True:  # bounded: read_some times out
            payload, ended = decoded(self.final)
            if marker in payload or ended:
                return payload, ended
            self.raw += await self.conn.read_some()


@pytest.mark.parametrize("kind", ["native", "asgi"])
async def test_a_streamed_answer_reads_the_body_that_arrives_after_its_head(kind):
    app, settings = (native_app(), {}) if kind == "native" else (asgi_app, {"lifespan": "off"})
    async with running(app, **settings) as server:
        async with raw_connection(server) as conn:
            answer = Answer(conn)
            await conn.send(HEAD)
            payload, _ = await answer.until(b"ready;")
            assert answer.raw.startswith(b"HTTP/1.1 200") and payload == b"ready;", answer.raw
            for piece in PIECES:  # each piece only once the one before came back
                await conn.send(piece)
                payload, _ = await answer.until(piece.upper())
                assert piece.upper() in payload, answer.raw
            payload, ended = await answer.until(b"end;")
            assert payload == b"ready;" + b"".join(PIECES).upper() + b"end;", answer.raw


async def answers_then_receives(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"done", "more_body": False})
    received.append(await receive())


received: list[dict] = []


async def test_receive_after_the_response_was_sent_is_http_disconnect_not_a_short_body():
    """ASGI spec: receive() after a response has been sent gives http.disconnect. The body may still be
    on its way (it is dropped once the answer is complete): an empty http.request would be a lie."""
    received.clear()
    async with running(answers_then_receives, lifespan="off") as server:
        async with raw_connection(server) as conn:
            await conn.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
            response = await conn.read_response("POST")
            assert response.status == 200 and response.body == b"done"
            await conn.send(b"0123456789")
            for _ in range(100):  # bounded: the app's receive() answers within a few loop turns
                if received:
                    break
                await asyncio.sleep(0.01)  # polling the app's record; no event reaches the test from it
    assert received == [{"type": "http.disconnect"}], received


@pytest.mark.parametrize("kind", ["native", "asgi"])
async def test_no_100_continue_inside_an_answer_that_has_begun(kind):
    """A request with ``Expect: 100-continue`` whose answer begins before it reads the body: a 1xx after
    the final answer's head would land inside its chunked body (RFC 9110 15.2: informational answers come
    before the final one). The body, sent by the client without waiting, is read all the same."""
    app, settings = (native_app(), {}) if kind == "native" else (asgi_app, {"lifespan": "off"})
    head = HEAD.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    async with running(app, **settings) as server:
        async with raw_connection(server) as conn:
            answer = Answer(conn)
            await conn.send(head)
            payload, _ = await answer.until(b"ready;")
            assert answer.final.startswith(b"HTTP/1.1 200") and payload == b"ready;", answer.raw
            for piece in PIECES:
                await conn.send(piece)
                payload, _ = await answer.until(piece.upper())
            payload, ended = await answer.until(b"end;")
            assert ended and payload == b"ready;" + b"".join(PIECES).upper() + b"end;", answer.raw
            assert b"100 Continue" not in answer.final, answer.raw


async def test_a_streamed_answer_to_an_unread_100_continue_body_closes_the_connection():
    """A stream answered without reading an ``Expect: 100-continue`` body (never asked for: no 100 sent)
    must close the connection, as a whole answer does: the body may or may not follow, so the next bytes
    cannot be read as a request. Kept alive, the connection waited in the body stage for ever (the body
    timeout re-armed while the 100 was unanswered), and a next request's first bytes were eaten as body."""
    app = App()

    @app.post("/ignore")
    async def ignore(request):
        async def produce():
            yield b"no body needed"
        return StreamResponse(produce(), content_type="text/plain")

    async with running(app, timeout_body=0.3, timeout_keep_alive=0.3) as server:
        async with raw_connection(server) as conn:
            await conn.send(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            response = await conn.read_response("POST")
            assert response.status == 200 and response.body == b"no body needed"
            assert "close" in response.connection_tokens(), response.headers
            assert await conn.is_closed_by_peer()  # bounded: it times out
