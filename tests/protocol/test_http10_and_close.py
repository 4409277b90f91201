"""HTTP/1.0 clients, Connection: close, and clients that go away mid-request."""

from __future__ import annotations

import asyncio
import logging

import pytest

import aioserve
from aioserve import App, Response, stream
from tests.support import (
    RawConnection,
    RecordingTransport,
    capture_logs,
    raw_connection,
    request_bytes,
    running,
    wait_until,
)


def make_app() -> App:
    app = App()

    @app.get("/")
    async def index(request):
        return "Hello, World!"

    @app.get("/version")
    async def version(request):
        return {"http_version": request.http_version, "keep_alive": request.keep_alive}

    @app.post("/echo")
    async def echo(request):
        return Response(await request.body())

    @app.get("/stream")
    async def streamed(request):
        async def gen():
            for i in range(20):
                yield f"line {i}\n"

        return stream(gen(), content_type="text/plain")

    @app.get("/closing")
    async def closing(request):
        return Response(b"bye", headers={"Connection": "close"})

    return app


STREAM_BODY = "".join(f"line {i}\n" for i in range(20)).encode()


# --------------------------------------------------------------------------
# HTTP/1.0
# --------------------------------------------------------------------------


async def test_http10_without_keep_alive_closes_after_response():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(b"GET /version HTTP/1.0\r\n\r\n")
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b'{"http_version":"1.0","keep_alive":false}'
        assert "keep-alive" not in resp.connection_tokens()
        assert await conn.is_closed_by_peer(), "HTTP/1.0 connection left open without keep-alive"


async def test_http10_with_keep_alive_stays_open():
    async with running(make_app()) as server, raw_connection(server) as conn:
        req = b"GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        await conn.send(req)
        first = await conn.read_final_response()
        assert first.status == 200
        assert "keep-alive" in first.connection_tokens()
        assert first.header("content-length") == str(len(first.body))
        assert first.body == b'{"http_version":"1.0","keep_alive":true}'
        await conn.send(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc")
        second = await conn.read_final_response()
        assert second.body == b"abc"
        assert "keep-alive" in second.connection_tokens()
        # Without the header the next request ends the connection.
        await conn.send(b"GET / HTTP/1.0\r\n\r\n")
        third = await conn.read_final_response()
        assert third.body == b"Hello, World!"
        assert await conn.is_closed_by_peer()


@pytest.mark.parametrize("keep_alive", [False, True], ids=["plain", "keep-alive-requested"])
async def test_http10_streamed_response_is_delimited_by_close(keep_alive):
    async with running(make_app()) as server, raw_connection(server) as conn:
        extra = b"Connection: keep-alive\r\n" if keep_alive else b""
        await conn.send(b"GET /stream HTTP/1.0\r\n" + extra + b"\r\n")
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert not resp.has("transfer-encoding"), "chunked encoding sent to an HTTP/1.0 client"
        if resp.has("content-length"):
            # Acceptable only if the server buffered the body and framed it exactly.
            assert int(resp.header("content-length")) == len(STREAM_BODY)
            assert resp.body == STREAM_BODY
            if not keep_alive:
                assert await conn.is_closed_by_peer()
        else:
            assert resp.close_delimited
            assert resp.body == STREAM_BODY
            assert "keep-alive" not in resp.connection_tokens()


async def test_http10_never_gets_100_continue():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(
            b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        # An HTTP/1.0 client does not understand 100: nothing may arrive yet.
        await conn.assert_silent(0.3)
        await conn.send(b"data")
        resp = await conn.read_response()
        assert resp.status == 200, f"got {resp.status} (an interim response to HTTP/1.0?)"
        assert resp.body == b"data"


# --------------------------------------------------------------------------
# Connection: close
# --------------------------------------------------------------------------


async def test_client_connection_close_is_honoured():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/version", headers=[("Connection", "close")]))
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b'{"http_version":"1.1","keep_alive":false}'
        assert "close" in resp.connection_tokens()
        assert await conn.is_closed_by_peer()


async def test_requests_pipelined_after_connection_close_are_not_answered():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(
            request_bytes("GET", "/", headers=[("Connection", "close")]) + request_bytes("GET", "/version")
        )
        resp = await conn.read_final_response()
        assert resp.body == b"Hello, World!"
        assert await conn.is_closed_by_peer()


async def test_handler_connection_close_closes_after_response():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/closing"))
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b"bye"
        assert "close" in resp.connection_tokens()
        assert len(resp.getall("connection")) == 1, resp.headers
        assert await conn.is_closed_by_peer()


async def test_http11_defaults_to_keep_alive():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/version"))
        resp = await conn.read_final_response()
        assert resp.body == b'{"http_version":"1.1","keep_alive":true}'
        assert "close" not in resp.connection_tokens()
        await conn.assert_silent(0.2)  # not closed


# --------------------------------------------------------------------------
# Clients that disconnect
# --------------------------------------------------------------------------


async def test_disconnect_mid_body_raises_client_disconnected():
    app = make_app()
    outcome: dict = {}
    done = asyncio.Event()

    @app.post("/upload")
    async def upload(request):
        try:
            outcome["body"] = await request.body()
        except aioserve.ClientDisconnected as exc:
            outcome["exc"] = exc
            return "client is gone"
        except BaseException as exc:  # record exactly what the handler saw
            outcome["exc"] = exc
            raise
        finally:
            done.set()
        return "unreachable"

    with capture_logs() as logs:
        async with running(app) as server:
            conn = await RawConnection.open(server.port)
            await conn.send(request_bytes("POST", "/upload", headers=[("Content-Length", "1000")]) + b"x" * 500)
            await conn.close()
            await asyncio.wait_for(done.wait(), 5)
            assert "body" not in outcome, "body() returned although the client went away"
            assert isinstance(outcome.get("exc"), aioserve.ClientDisconnected), outcome
            # Others are still served.
            async with raw_connection(server) as other:
                await other.send(request_bytes("GET", "/"))
                assert (await other.read_final_response()).status == 200
    errors = logs.at_least(logging.ERROR)
    assert errors == [], logs.describe(errors)


async def test_disconnect_mid_body_in_stream_and_json():
    app = App()
    outcomes: dict[str, BaseException | None] = {}
    done = {"stream": asyncio.Event(), "json": asyncio.Event()}

    @app.post("/stream")
    async def via_stream(request):
        try:
            async for _ in request.stream():
                pass
            outcomes["stream"] = None
        except BaseException as exc:
            outcomes["stream"] = exc
        finally:
            done["stream"].set()
        return "x"

    @app.post("/json")
    async def via_json(request):
        try:
            await request.json()
            outcomes["json"] = None
        except BaseException as exc:
            outcomes["json"] = exc
        finally:
            done["json"].set()
        return "x"

    with capture_logs() as logs:
        async with running(app) as server:
            for name in ("stream", "json"):
                conn = await RawConnection.open(server.port)
                await conn.send(
                    request_bytes(
                        "POST",
                        f"/{name}",
                        headers=[("Content-Length", "100"), ("Content-Type", "application/json")],
                    )
                    + b'{"a": '
                )
                await conn.close()
                await asyncio.wait_for(done[name].wait(), 5)
                assert isinstance(outcomes[name], aioserve.ClientDisconnected), (name, outcomes[name])
    assert logs.at_least(logging.ERROR) == [], logs.describe()


async def test_uncaught_client_disconnected_is_not_logged_as_error():
    app = App()
    done = asyncio.Event()

    @app.post("/upload")
    async def upload(request):
        try:
            return Response(await request.body())
        finally:
            done.set()

    with capture_logs() as logs:
        async with running(app) as server:
            conn = await RawConnection.open(server.port)
            await conn.send(request_bytes("POST", "/upload", headers=[("Content-Length", "64")]) + b"half")
            await conn.close()
            await asyncio.wait_for(done.wait(), 5)
        # shutdown() has waited for the handler, so anything it logs is in by now.
    errors = logs.at_least(logging.ERROR)
    assert errors == [], logs.describe(errors)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_disconnect_while_handler_awaits(how):
    app = make_app()
    started = asyncio.Event()
    release = asyncio.Event()
    finished = asyncio.Event()
    seen: dict = {}

    @app.get("/wait")
    async def wait(request):
        seen["request"] = request
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise
        finished.set()
        return "too late"

    with capture_logs() as logs:
        async with running(app) as server:
            conn = await RawConnection.open(server.port)
            await conn.send(request_bytes("GET", "/wait"))
            await asyncio.wait_for(started.wait(), 5)
            if how == "reset":
                conn.reset()
            else:
                await conn.close()
            # The server notices the reset, or the close (EOF), without the handler doing anything.
            await wait_until(
                lambda: seen["request"].is_disconnected is True, 3,
                message=f"request.is_disconnected did not become True after a {how}",
            )
            release.set()
            await asyncio.wait_for(finished.wait(), 5)
            assert "cancelled" not in seen, "the handler was cancelled on disconnect"
            # The server is unharmed and keeps serving.
            async with raw_connection(server) as other:
                await other.send(request_bytes("GET", "/") * 2)
                for r in await other.read_responses(2):
                    assert r.status == 200 and r.body == b"Hello, World!"
    errors = logs.at_least(logging.ERROR)
    assert errors == [], logs.describe(errors)


async def test_is_disconnected_false_while_connected():
    app = App()

    @app.get("/")
    async def index(request):
        return {"disconnected": request.is_disconnected}

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).body == b'{"disconnected":false}'


async def test_streaming_generator_closed_when_client_goes_away():
    app = App()
    state = {"completed": False, "yielded": 0}
    closed = asyncio.Event()

    @app.get("/forever")
    async def forever(request):
        async def gen():
            try:
                for i in range(500):  # bounded: at most ~5 s of output
                    state["yielded"] += 1
                    yield b"x" * 1024
                    await asyncio.sleep(0.01)
                state["completed"] = True
            finally:
                closed.set()

        return stream(gen())

    with capture_logs() as logs:
        async with running(app) as server:
            conn = await RawConnection.open(server.port)
            await conn.send(request_bytes("GET", "/forever"))
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await conn.read_exactly(1024)  # some of the first chunk
            conn.reset()
            await asyncio.wait_for(closed.wait(), 3)
            assert state["completed"] is False, "generator ran to the end instead of being closed"
            assert state["yielded"] < 500
            async with raw_connection(server) as other:
                await other.send(request_bytes("GET", "/forever", headers=[("Connection", "close")]))
                # A new client still gets a streamed answer (the head at least).
                head2 = await asyncio.wait_for(other.reader.readuntil(b"\r\n\r\n"), 5)
                assert head2.startswith(b"HTTP/1.1 200")
                other.reset()
    errors = logs.at_least(logging.ERROR)
    assert errors == [], logs.describe(errors)


async def test_shutdown_waits_for_in_flight_request():
    app = App()
    started = asyncio.Event()

    @app.get("/work")
    async def work(request):
        started.set()
        await asyncio.sleep(0.3)
        return "done"

    server = await aioserve.serve(app, host="127.0.0.1", port=0, access_log=False)
    shutdown = None
    conn = await RawConnection.open(server.port)
    try:
        await conn.send(request_bytes("GET", "/work"))
        await asyncio.wait_for(started.wait(), 5)
        shutdown = asyncio.ensure_future(server.shutdown(timeout=5))
        resp = await conn.read_final_response()
        assert resp.status == 200 and resp.body == b"done"
        await asyncio.wait_for(shutdown, 10)
    finally:
        await conn.close()
        if shutdown is None:
            await asyncio.wait_for(server.shutdown(timeout=5), 15)
        elif not shutdown.done():
            await asyncio.wait_for(shutdown, 15)
    # No longer accepting.
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 2)


# --------------------------------------------------------------------------
# The HTTP version when a Connection header is present (without one, keep-alive implies 1.1):
# pipelined heads of different versions, heads split across reads, look-alikes. Fed straight into
# the protocol, read by read, so where each read begins and ends is exact.
# --------------------------------------------------------------------------


def _versions_app() -> App:
    app = App()

    @app.get("/v")
    async def version(request):
        return request.http_version  # no await: answered inline, within the read

    return app


def _head(version: str, target: str = "/v") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: x\r\nConnection: keep-alive\r\n\r\n".encode()


@pytest.mark.parametrize(
    "reads, versions",
    [
        ([_head("1.1")], ["1.1"]),
        ([_head("1.0")], ["1.0"]),
        ([_head("1.1") + _head("1.0")], ["1.1", "1.0"]),  # same target: the second head must not reuse the first line
        ([_head("1.0") + _head("1.1")], ["1.0", "1.1"]),
        ([b"\r\n" + _head("1.0")], ["1.0"]),  # a stray CRLF before the line
        ([b"GET /v HTTP/1.", b"0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"], ["1.0"]),
        ([b"GET /v HTTP/1.1\r\nHo", b"st: x\r\nConnection: keep-alive\r\n\r\n"], ["1.1"]),
        ([b"G", _head("1.0")[1:]], ["1.0"]),
        # A read that looks like a 1.1 request line but continues a 1.0 head's header value.
        ([b"GET /v HTTP/1.0\r\nX-Note: ", b"GET /v HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"], ["1.0"]),
        ([_head("1.0", "http://x/v")], ["1.0"]),  # absolute form
        ([_head("1.1", "http://x/v")], ["1.1"]),
    ],
    ids=["1.1", "1.0", "1.1-then-1.0", "1.0-then-1.1", "stray-crlf", "split-in-version", "split-in-headers",
         "split-in-method", "header-value-lookalike", "absolute-1.0", "absolute-1.1"],
)
async def test_http_version_with_a_connection_header(reads, versions):
    from aioserve.config import Config
    from aioserve.connection import Connection
    from aioserve.shared import ServerState

    state = ServerState(_versions_app(), Config(access_log=False), asyncio.get_running_loop())
    protocol = Connection(state)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    try:
        for data in reads:
            protocol.data_received(data)
        answers = transport.data.split(b"HTTP/1.1 200 OK\r\n")[1:]
        assert [a.rsplit(b"\r\n\r\n", 1)[1].decode() for a in answers] == versions
        # A 1.0 client asked for keep-alive, and gets it said back; a 1.1 one needs no such line.
        for answer, version in zip(answers, versions):
            assert (b"Connection: keep-alive" in answer) == (version == "1.0")
    finally:
        protocol.connection_lost(None)
        state.timers.close()


async def test_an_unsupported_version_with_a_connection_header_is_refused():
    async with running(make_app()) as server, raw_connection(server) as conn:
        await conn.send(b"GET /version HTTP/2.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        resp = await conn.read_final_response()
        assert resp.status == 505
