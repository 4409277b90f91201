"""Refusals as the README's "Protocol details" describe them, where the code had drifted from it:
the HTTP/2 preface is a 505, a HEAD refused before it became a request gets the head alone, and
``OPTIONS *`` lists HEAD where a GET route answers it."""

from __future__ import annotations

import pytest

from aioserve import App
from tests.support import raw_connection, running

#: What an HTTP/2 client with prior knowledge sends first: the preface, then its SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000012040000000000000300000064000440000000000200000000")


def _app() -> App:
    app = App()

    @app.get("/")
    async def index(request):
        return "index"

    @app.post("/items")
    async def create(request):
        return "created"

    return app


async def test_http2_preface_is_505_and_closed():
    async with running(_app()) as server, raw_connection(server) as conn:
        await conn.send(H2_PREFACE)
        response = await conn.read_final_response()
        assert response.status == 505, (response.status, response.body)
        assert b"HTTP/2" in response.body
        assert await conn.is_closed_by_peer()


REFUSED_HEADS = {
    "no Host": (b"%s / HTTP/1.1\r\n\r\n", 400),
    "two Hosts": (b"%s / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "fragment after query": (b"%s /?a=1#f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad header name": (b"%s / HTTP/1.1\r\nHost: x\r\nA\x01: b\r\n\r\n", 400),
    "too many fields": (b"%s / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5)) + b"\r\n", 431),
    "target too long": (b"%s /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "HTTP/2.0 line": (b"%s / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
}


@pytest.mark.parametrize("name", REFUSED_HEADS)
async def test_a_head_refused_before_it_became_a_request_gets_the_head_alone(name):
    template, status = REFUSED_HEADS[name]
    async with running(_app(), limit_request_fields=3, limit_request_line=100) as server:
        async with raw_connection(server) as conn:  # the same refusal of a GET has a body: the test can tell
            await conn.send(template % b"GET")
            response = await conn.read_final_response("GET")
            assert response.status == status and response.body, (response.status, response.body)
            assert await conn.is_closed_by_peer()
        async with raw_connection(server) as conn:
            await conn.send(template % b"HEAD")
            response = await conn.read_final_response("HEAD")
            assert response.status == status
            assert int(response.header("content-length")) > 0  # the length a GET's answer would have
            assert await conn.is_closed_by_peer()  # fails on any byte of a body after the head


async def test_options_asterisk_allow_lists_head_where_get_answers_it():
    async with running(_app()) as server, raw_connection(server) as conn:
        await conn.send(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_final_response("OPTIONS")
        assert response.status == 200
        allow = {m.strip() for m in response.header("allow").split(",")}
        assert allow == {"GET", "HEAD", "OPTIONS", "POST"}
        await conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        refused = await conn.read_final_response("POST")  # the 405 for "/" says the same of HEAD
        assert refused.status == 405 and refused.header("allow") == "GET, HEAD"
