"""ASGI apps under aioserve, held to the ASGI spec (asgiref ``www.rst``) and to HTTP: what the app
declares is what the client gets, a response the server cannot send is a 500 while nothing was sent,
and ``receive()`` says ``http.disconnect`` as soon as the client is gone or the response is sent."""
from __future__ import annotations

import asyncio
import logging

import pytest

from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.support import raw_connection, request_bytes, running, wait_until


def one_response(headers: list, bodies: list[tuple[bytes, bool]]):
    """A bare ASGI app answering every request with ``headers`` and the body messages ``bodies``."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for body, more in bodies:
            await send({"type": "http.response.body", "body": body, "more_body": more})

    return app


def errors_naming(logs, name: str) -> list[logging.LogRecord]:
    return [r for r in logs.at_least(logging.ERROR) if name in r.getMessage()]


# -- HEAD: the Content-Length a GET would carry (RFC 9110 9.3.2) ------------------------------------------
async def test_head_keeps_the_content_length_the_app_declared(tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"b" * 5000)
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "s.txt").write_bytes(b"s" * 777)
    raw = one_response([(b"content-length", b"1234"), (b"content-type", b"text/plain")], [(b"", False)])
    app = Starlette(routes=[Route("/file", lambda r: FileResponse(blob), methods=["GET", "HEAD"]),
                            Mount("/static", StaticFiles(directory=tmp_path / "static")), Mount("/raw", raw)])
    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        for target, length in (("/file", "5000"), ("/static/s.txt", "777"), ("/raw/x", "1234")):
            await conn.send(request_bytes("HEAD", target))
            response = await conn.read_final_response("HEAD")
            assert response.status == 200 and response.body == b"", target
            assert response.getall("content-length") == [length], target
        await conn.send(request_bytes("GET", "/file"))  # the connection is still in step
        response = await conn.read_final_response()
        assert response.status == 200 and response.body == b"b" * 5000


# -- a response the server cannot send as declared: 500 while nothing was sent --------------------------------
@pytest.mark.parametrize("declared", [b"3", b"20"], ids=["shorter", "longer"])
async def test_a_content_length_that_disagrees_with_the_one_body_is_a_500(declared, logs):
    """A whole body in one message and a Content-Length that is not its size: nothing is sent yet, so
    the client gets a 500 (never the head and a mis-framed body), and the log one line naming the app."""
    app = one_response([(b"content-length", declared)], [(b"abcdefghij", False)])
    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        for _ in range(2):  # the connection stays in step: nothing of the bad answer was written
            await conn.send(request_bytes("GET", "/"))
            response = await conn.read_final_response()
            assert response.status == 500 and response.body == b"Internal Server Error"
    assert len(errors_naming(logs, "one_response.<locals>.app")) == 2, logs.describe()
    assert len(logs.at_least(logging.ERROR)) == 2, logs.describe()


BAD_HEADERS = {
    "crlf-in-value": (b"x-a", b"v\r\nSet-Cookie: evil=1"),
    "name-not-a-token": (b"bad name", b"v"),
    "negative-length": (b"content-length", b"-1"),
    "length-not-a-number": (b"content-length", b"abc"),
    "length-with-a-sign": (b"content-length", b"+5"),
}


@pytest.mark.parametrize("streamed", [False, True], ids=["one-message", "streamed"])
@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=list(BAD_HEADERS))
async def test_a_bad_header_is_a_500_while_nothing_was_sent(header, streamed, logs):
    """A header the server refuses to write: the app's send() raises, and the client gets a 500 (not
    the 204 a handler returning None gets), whether the body came whole or was to be streamed."""
    bodies = [(b"he", True), (b"llo", False)] if streamed else [(b"hello", False)]
    async with running(one_response([header], bodies), lifespan="off") as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        response = await conn.read_final_response()
        assert response.status == 500 and response.body == b"Internal Server Error"
        assert not response.has("set-cookie") and not response.has("x-a")
        await conn.send(request_bytes("GET", "/"))  # kept alive, and in step
        assert (await conn.read_final_response()).status == 500
    assert len(errors_naming(logs, "one_response.<locals>.app")) == 2, logs.describe()
    assert len(logs.at_least(logging.ERROR)) == 2, logs.describe()


@pytest.mark.parametrize("ending", ["returns", "raises"])
async def test_a_bad_header_then_no_body_is_a_500(ending, logs):
    """The app starts with a header the server will not write, then returns or raises before any body:
    its head cannot be sent, so the client gets a 500, and the log one line naming the app."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"v\r\nx-b: 1")]})
        if ending == "raises":
            raise RuntimeError("gave up")

    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        response = await conn.read_final_response()
        assert response.status == 500 and response.body == b"Internal Server Error"
    assert len(logs.at_least(logging.ERROR)) == 1, logs.describe()
    assert "test_a_bad_header_then_no_body_is_a_500.<locals>.app" in logs.at_least(logging.ERROR)[0].getMessage()


async def test_a_bad_header_before_pathsend_is_a_500(tmp_path, logs):
    path = tmp_path / "f.txt"
    path.write_bytes(b"file")

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"v")]})
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        response = await conn.read_final_response()
        assert response.status == 500 and response.body == b"Internal Server Error"
    assert len(logs.at_least(logging.ERROR)) == 1, logs.describe()
    assert "ASGI app test_a_bad_header_before_pathsend_is_a_500.<locals>.app raised ValueError" in \
        logs.at_least(logging.ERROR)[0].getMessage()


# -- receive(): http.disconnect once the client is gone -----------------------------------------------------
async def test_starlette_is_disconnected_turns_true_once_the_client_left():
    """Starlette's ``request.is_disconnected()`` calls receive() in a cancelled scope: it must answer
    http.disconnect without waiting once the client is gone (the long-poll and SSE loop check)."""
    polling, detected = asyncio.Event(), asyncio.Event()

    async def poll(request: StarletteRequest):
        polling.set()
        for _ in range(500):  # Starlette offers only polling for this; bounded at 5 s
            if await request.is_disconnected():
                detected.set()
                return PlainTextResponse("gone")
            await asyncio.sleep(0.01)
        return PlainTextResponse("never noticed")

    async with running(Starlette(routes=[Route("/poll", poll)])) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/poll"))
            await asyncio.wait_for(polling.wait(), 5)
            assert not detected.is_set()  # the client is still there
        await asyncio.wait_for(detected.wait(), 5)


@pytest.mark.parametrize("method,streamed", [("GET", True), ("GET", False), ("HEAD", True), ("HEAD", False)],
                         ids=["streamed", "whole", "head-streamed", "head-whole"])
async def test_a_waiting_receive_hears_disconnect_once_the_response_is_sent(method, streamed):
    """An app listening for http.disconnect in a task while it answers (the pre-2.4 Starlette way): once
    its response is sent, the waiting receive() returns http.disconnect (www.rst, "Disconnect"), though
    the client keeps its connection open; the connection then serves the next request."""
    heard: asyncio.Queue = asyncio.Queue()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        listening = asyncio.Event()

        async def listen():
            listening.set()
            return await receive()  # runs on to where it waits, in the same step as set()

        listener = asyncio.ensure_future(listen())
        await listening.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        if streamed:
            for piece in (b"a", b"b", b"c"):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": b"" if method == "HEAD" else b"abc"})
        try:
            heard.put_nowait((await asyncio.wait_for(listener, 5))["type"])
        except asyncio.TimeoutError:
            heard.put_nowait("still waiting")

    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        for _ in range(2):
            await conn.send(request_bytes(method, "/"))
            response = await conn.read_final_response(method)
            assert response.status == 200 and response.header("content-length") == "3"
            assert response.body == (b"" if method == "HEAD" else b"abc")
            assert await asyncio.wait_for(heard.get(), 10) == "http.disconnect"


def watchers() -> list[asyncio.Task]:
    """The adapter's tasks watching a request's client (one per request whose app waited in receive())."""
    return [t for t in asyncio.all_tasks() if "wait_disconnected" in repr(t.get_coro())]


async def test_the_watcher_of_a_polled_request_ends_with_its_response():
    """is_disconnected() polls leave one watcher for the request; it stops once the response is sent."""
    async def poll(request: StarletteRequest):
        for _ in range(3):
            assert not await request.is_disconnected()
        return PlainTextResponse("still here")

    async with running(Starlette(routes=[Route("/poll", poll)])) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/poll"))
        assert (await conn.read_final_response()).body == b"still here"
        await wait_until(lambda: not watchers(), 5, "the watcher outlived its response")


@pytest.mark.parametrize("ending", ["raises", "returns"])
async def test_a_waiting_receive_hears_disconnect_when_the_app_fails_before_its_response(ending):
    heard: asyncio.Queue = asyncio.Queue()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()  # the (empty) body
        listening = asyncio.Event()

        async def listen():
            listening.set()
            heard.put_nowait((await receive())["type"])

        asyncio.ensure_future(listen())
        await listening.wait()
        if ending == "raises":
            raise RuntimeError("no answer")

    async with running(app, lifespan="off") as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 500
        assert await asyncio.wait_for(heard.get(), 5) == "http.disconnect"


# -- a client that leaves is not the app's fault ---------------------------------------------------------------
async def test_an_app_that_returns_after_an_aborted_upload_is_not_logged_as_an_error(logs):
    """The client leaves mid-body; the app hears http.disconnect and returns with nobody to answer.
    That is no misbehaviour: nothing at ERROR (uvicorn is silent too)."""
    returned = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        try:
            while (message := await receive())["type"] == "http.request" and message.get("more_body"):
                pass
            assert message["type"] == "http.disconnect"
        finally:
            returned.set()

    async with running(app, lifespan="off") as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("POST", "/upload", headers={"Content-Length": "1000"}) + b"x" * 10)
        await asyncio.wait_for(returned.wait(), 5)
    assert not logs.at_least(logging.ERROR), logs.describe()


async def test_an_app_that_stops_its_stream_when_the_client_left_is_not_logged_as_an_error(logs):
    returned = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        try:
            await receive()  # the (empty) body
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            assert (await asyncio.wait_for(receive(), 5))["type"] == "http.disconnect"
        finally:
            returned.set()

    async with running(app, lifespan="off") as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            await asyncio.wait_for(conn.reader.readuntil(b"first"), 5)
        await asyncio.wait_for(returned.wait(), 5)
    assert not logs.at_least(logging.ERROR), logs.describe()


# -- any method reaches the app (www.rst: "method: The HTTP method name, uppercased") -----------------------------
EXTENSION_METHODS = ["PROPFIND", "MKCOL", "REPORT", "PURGE", "QUERY", "LOCK", "SEARCH"]


async def test_extension_methods_reach_the_app():
    """WebDAV, cache purges and QUERY: every method the parser accepts is the app's to answer,
    on ``/`` and below it, with its body; the app's own 405 for one it does not route."""
    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 207, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"{scope['method']} {scope['path']} ".encode() + body})

    async def propfind(request: StarletteRequest):
        return PlainTextResponse(f"{request.method} {(await request.body()).decode()}")

    app = Starlette(routes=[Route("/dav", propfind, methods=["PROPFIND"]), Mount("/raw", echo)])
    async with running(echo, lifespan="off", metrics="/metrics") as server, raw_connection(server) as conn:
        for method in EXTENSION_METHODS:
            for path in ("/", "/a/b"):
                await conn.send(request_bytes(method, path, body=b"<x/>"))
                response = await conn.read_final_response(method)
                assert response.status == 207 and response.body == f"{method} {path} <x/>".encode()
        await conn.send(request_bytes("PURGE", "/metrics"))  # the server's own route keeps its methods
        assert (await conn.read_final_response("PURGE")).status == 405
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("PROPFIND", "/dav", body=b"<propfind/>"))
        response = await conn.read_final_response("PROPFIND")
        assert response.status == 200 and response.body == b"PROPFIND <propfind/>"
        await conn.send(request_bytes("MKCOL", "/dav"))
        response = await conn.read_final_response("MKCOL")
        assert response.status == 405 and response.header("allow") == "PROPFIND"  # Starlette's, not ours
