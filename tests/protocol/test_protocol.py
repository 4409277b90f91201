"""HTTP/1.1 protocol behaviour, checked byte by byte over raw sockets."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioserve
from aioserve import App, HTTPError, Response, stream, text
from tests.support import (
    RawConnection,
    capture_logs,
    http_client,
    raw_connection,
    request_bytes,
    running,
)


def basic_app(**app_kwargs) -> App:
    app = App(**app_kwargs)

    @app.get("/")
    async def index(request):
        return "Hello, World!"

    @app.get("/n/{i:int}")
    async def number(request, i: int):
        return str(i)

    @app.post("/echo")
    async def echo(request):
        body = await request.body()
        return Response(body, content_type=request.headers.get("content-type", "application/octet-stream"))

    @app.get("/data")
    async def data(request):
        return Response(b"hello world", headers={"X-Extra": "1"}, content_type="text/plain")

    @app.get("/dict")
    async def as_dict(request):
        await asyncio.sleep(0)  # a handler that really suspends
        return {"a": 1}

    @app.get("/bytes")
    async def as_bytes(request):
        return b"\x00\x01\x02"

    @app.get("/nothing")
    async def nothing(request):
        return None

    @app.get("/not-modified")
    async def not_modified(request):
        return Response(b"", status=304, headers={"ETag": '"v1"'})

    @app.get("/numbers")
    async def numbers(request):
        async def gen():
            for i in range(50):
                yield f"{i}\n"
            yield b""  # an empty chunk must not end the body early
            yield b"bytes-too\n"

        return stream(gen(), content_type="text/plain")

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("secret-detail-xyz")

    @app.get("/teapot")
    async def teapot(request):
        raise HTTPError(418, detail="teapot")

    return app


# --------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------


async def test_basic_get():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        resp = await conn.read_final_response()
        assert resp.version == "1.1"
        assert resp.status == 200
        assert resp.reason == "OK"
        assert resp.body == b"Hello, World!"
        assert resp.header("content-length") == "13"
        assert resp.header("content-type") == "text/plain; charset=utf-8"
        assert not resp.close_delimited


async def test_keep_alive_two_requests_on_one_connection():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/n/1"))
        first = await conn.read_final_response()
        assert first.status == 200 and first.body == b"1"
        assert "close" not in first.connection_tokens()
        await conn.send(request_bytes("GET", "/n/2"))
        second = await conn.read_final_response()
        assert second.status == 200 and second.body == b"2"
        # Still open afterwards: a third request works too.
        await conn.send(request_bytes("POST", "/echo", body=b"abc"))
        third = await conn.read_final_response()
        assert third.body == b"abc"


async def test_pipelined_responses_keep_request_order_even_when_completed_out_of_order():
    app = App()
    release_a = asyncio.Event()
    b_ran = asyncio.Event()
    order: list[str] = []

    @app.get("/a")
    async def a(request):
        await release_a.wait()
        order.append("a")
        return "response-a"

    @app.get("/b")
    async def b(request):
        order.append("b")
        b_ran.set()
        return "response-b"

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/a") + request_bytes("GET", "/b"))
        # A server may run /b concurrently (then it finishes first) or strictly
        # after /a; both are fine, but no byte of /b may overtake /a.
        try:
            await asyncio.wait_for(b_ran.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
        await conn.assert_silent(0.2)
        release_a.set()
        first, second = await conn.read_responses(2)
        assert first.body == b"response-a"
        assert second.body == b"response-b"
        assert sorted(order) == ["a", "b"]


async def test_many_pipelined_requests_in_one_write():
    count = 100
    async with running(basic_app()) as server, raw_connection(server) as conn:
        payload = b"".join(request_bytes("GET", f"/n/{i}") for i in range(count))
        await conn.send(payload)
        responses = await conn.read_responses(count, timeout=10)
        assert [r.status for r in responses] == [200] * count
        assert [r.body for r in responses] == [str(i).encode() for i in range(count)]
        # The connection is still healthy afterwards.
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).body == b"Hello, World!"


async def test_pipelined_mixed_methods_with_bodies():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        payload = (
            request_bytes("POST", "/echo", body=b"one")
            + request_bytes("HEAD", "/data")
            + request_bytes("POST", "/echo", body=b"two-two")
            + request_bytes("GET", "/nothing")
            + request_bytes("GET", "/n/7")
        )
        await conn.send(payload)
        responses = await conn.read_responses(5, methods=["POST", "HEAD", "POST", "GET", "GET"])
        assert [r.status for r in responses] == [200, 200, 200, 204, 200]
        assert responses[0].body == b"one"
        assert responses[1].body == b""
        assert responses[2].body == b"two-two"
        assert responses[4].body == b"7"


# --------------------------------------------------------------------------
# HEAD, 204, 304
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,length",
    [("/data", "11"), ("/", "13"), ("/n/12345", "5"), ("/dict", "7"), ("/bytes", "3")],
    ids=["response", "str", "str-with-param", "dict", "bytes"],
)
async def test_head_has_get_headers_but_no_body(path, length):
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", path))
        get = await conn.read_final_response()
        await conn.send(request_bytes("HEAD", path))
        head = await conn.read_final_response(method="HEAD")
        assert head.status == 200
        assert head.body == b""
        assert head.header("content-length") == length == get.header("content-length")

        def comparable(r):
            return sorted((k, v) for k, v in r.headers if k != "date")

        assert comparable(head) == comparable(get)
        # No body bytes leaked: the next response parses cleanly.
        await conn.send(request_bytes("GET", "/n/5"))
        nxt = await conn.read_final_response()
        assert nxt.status == 200 and nxt.body == b"5"


async def test_head_on_streamed_route_sends_no_body():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("HEAD", "/numbers"))
        head = await conn.read_final_response(method="HEAD")
        assert head.status == 200
        await conn.send(request_bytes("GET", "/n/9"))
        nxt = await conn.read_final_response()
        assert nxt.body == b"9", "bytes of the HEAD response body leaked onto the connection"


@pytest.mark.parametrize("path,status", [("/nothing", 204), ("/not-modified", 304)])
async def test_204_and_304_have_no_body_and_no_content_length(path, status):
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", path))
        resp = await conn.read_final_response()
        assert resp.status == status
        assert not resp.has("content-length")
        assert not resp.has("transfer-encoding")
        assert resp.body == b""
        await conn.send(request_bytes("GET", "/n/3"))
        nxt = await conn.read_final_response()
        assert nxt.status == 200 and nxt.body == b"3"


# --------------------------------------------------------------------------
# Expect: 100-continue
# --------------------------------------------------------------------------


async def test_expect_100_continue_sent_when_handler_reads_body():
    app = App()
    go = asyncio.Event()

    @app.post("/upload")
    async def upload(request):
        await go.wait()
        body = await request.body()
        return Response(body[::-1])

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(
            request_bytes(
                "POST", "/upload", headers=[("Expect", "100-continue"), ("Content-Length", "5")]
            )
        )
        # The handler has not asked for the body yet: no interim response.
        await conn.assert_silent(0.2)
        go.set()
        interim = await conn.read_exactly(len(b"HTTP/1.1 100 Continue\r\n\r\n"))
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await conn.send(b"hello")
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b"olleh"
        # Keep-alive still works after the exchange.
        await conn.send(request_bytes("POST", "/upload", body=b"ab"))
        again = await conn.read_final_response()
        assert again.body == b"ba"


async def test_expect_100_continue_not_sent_when_handler_ignores_body():
    app = App()

    @app.post("/reject")
    async def reject(request):
        raise HTTPError(403, detail="no uploads")

    @app.post("/ignore")
    async def ignore(request):
        return "did not need it"

    async with running(app) as server:
        for path, status, body in [("/reject", 403, b"no uploads"), ("/ignore", 200, b"did not need it")]:
            async with raw_connection(server) as conn:
                await conn.send(
                    request_bytes("POST", path, headers=[("Expect", "100-continue"), ("Content-Length", "1000")])
                )
                resp = await conn.read_response()
                assert resp.status == status, "a 100 Continue was sent although the body was never read"
                assert resp.body == body


# --------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------


async def test_chunked_upload_with_extensions_and_trailers_is_echoed():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        head = (
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        )
        body = (
            b"5;name=value\r\nhello\r\n"
            b"1;flag\r\n \r\n"
            b"A\r\n0123456789\r\n"
            b"0\r\nX-Checksum: abc\r\n\r\n"
        )
        await conn.send(head + body)
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b"hello 0123456789"
        assert resp.header("content-type") == "text/plain"
        # The connection is still in sync after the trailers.
        await conn.send(request_bytes("GET", "/n/42"))
        assert (await conn.read_final_response()).body == b"42"


async def test_body_split_across_one_byte_writes():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        payload = request_bytes("POST", "/echo", headers=[("X-Pad", "p" * 40)], body=b"tiny-writes-body")
        assert len(payload) < 400
        await conn.send_bytewise(payload)
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b"tiny-writes-body"


async def test_chunked_body_split_across_one_byte_writes():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        payload = (
            b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n"
        )
        await conn.send_bytewise(payload)
        resp = await conn.read_final_response()
        assert resp.body == b"abcdefg"


async def test_request_stream_reads_incrementally():
    app = App()
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    @app.post("/consume")
    async def consume(request):
        total = 0
        async for chunk in request.stream():
            assert isinstance(chunk, (bytes, bytearray, memoryview))
            total += len(chunk)
            await seen.put(bytes(chunk))
        return {"total": total}

    async def received(n: int) -> bytes:
        got = b""
        for _ in range(10_000):
            if len(got) >= n:
                break
            got += await asyncio.wait_for(seen.get(), 5)
        return got

    parts = [b"a" * 1000, b"b" * 3000, b"c" * 500]
    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(
            request_bytes("POST", "/consume", headers=[("Content-Length", str(sum(map(len, parts))))])
        )
        for part in parts:
            await conn.send(part)
            # The handler sees this part before the next one has even been sent.
            assert await received(len(part)) == part
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.body == b'{"total":4500}'


async def test_body_over_server_limit_is_413():
    async with running(basic_app(), max_body_size=100) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("POST", "/echo", body=b"x" * 100))
            ok = await conn.read_final_response()
            assert ok.status == 200 and len(ok.body) == 100
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("POST", "/echo", body=b"x" * 101))
            assert (await conn.read_final_response()).status == 413
        async with raw_connection(server) as conn:
            chunked = b"40\r\n" + b"y" * 64 + b"\r\n40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n"
            await conn.send(request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + chunked)
            assert (await conn.read_final_response()).status == 413


async def test_default_body_limit_is_one_mebibyte():
    async with running(basic_app()) as server:
        async with http_client(server) as client:
            ok = await client.post("/echo", content=b"z" * (1024 * 1024))
            assert ok.status_code == 200 and len(ok.content) == 1024 * 1024
        async with raw_connection(server) as conn:
            # Upload in the background (the server may answer 413 and close
            # before the whole body is sent) while reading the answer.
            size = 1024 * 1024 + 1
            writer = asyncio.ensure_future(
                conn.send_ignoring_errors(request_bytes("POST", "/echo", body=b"z" * size))
            )
            try:
                too_big = await conn.read_final_response()
            finally:
                await asyncio.wait_for(writer, 10)
            assert too_big.status == 413


async def test_per_route_body_limit():
    app = App()

    @app.post("/unlimited", max_body_size=None)
    async def unlimited(request):
        return {"size": len(await request.body())}

    @app.post("/small", max_body_size=10)
    async def small(request):
        return {"size": len(await request.body())}

    async with running(app, max_body_size=1000) as server, http_client(server) as client:
        big = await client.post("/unlimited", content=b"u" * (2 * 1024 * 1024))
        assert big.status_code == 200 and big.json() == {"size": 2 * 1024 * 1024}
        assert (await client.post("/small", content=b"s" * 10)).json() == {"size": 10}
        assert (await client.post("/small", content=b"s" * 11)).status_code == 413


# --------------------------------------------------------------------------
# Streaming responses
# --------------------------------------------------------------------------


async def test_streamed_response_uses_valid_chunked_encoding():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/numbers"))
        resp = await conn.read_final_response()
        assert resp.status == 200
        assert resp.chunked, "a streamed response to HTTP/1.1 must be chunked"
        assert not resp.has("content-length")
        assert resp.header("content-type").startswith("text/plain")
        expected = "".join(f"{i}\n" for i in range(50)).encode() + b"bytes-too\n"
        assert resp.body == expected
        assert resp.chunk_sizes[-1] == 0
        assert 0 not in resp.chunk_sizes[:-1], "an empty chunk was written before the end"
        # The terminating chunk left the connection in sync.
        await conn.send(request_bytes("GET", "/n/1"))
        assert (await conn.read_final_response()).body == b"1"


async def test_streamed_response_sends_chunks_before_generator_finishes():
    app = App()
    proceed = asyncio.Event()

    @app.get("/progressive")
    async def progressive(request):
        async def gen():
            yield b"first-part"
            await proceed.wait()
            yield b"second-part"

        return stream(gen(), content_type="application/octet-stream", headers={"X-Stream": "yes"})

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/progressive"))
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
        assert b"x-stream: yes" in head.lower()
        assert b"transfer-encoding: chunked" in head.lower()
        first = await asyncio.wait_for(conn.reader.readuntil(b"first-part\r\n"), 5)
        assert first.endswith(b"first-part\r\n")
        proceed.set()
        rest = await asyncio.wait_for(conn.reader.readuntil(b"0\r\n\r\n"), 5)
        assert b"second-part" in rest


async def test_streamed_response_with_status_and_headers():
    app = App()

    @app.get("/created")
    async def created(request):
        async def gen():
            yield "a"
            yield "b"

        return stream(gen(), status=201, headers={"X-Kind": "stream"}, content_type="text/csv")

    async with running(app) as server, http_client(server) as client:
        r = await client.get("/created")
        assert r.status_code == 201
        assert r.headers["x-kind"] == "stream"
        assert r.headers["content-type"].startswith("text/csv")
        assert r.text == "ab"


# --------------------------------------------------------------------------
# Errors and refused protocols
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nThis header has no colon\r\n\r\n",
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["no-colon", "garbage", "bad-content-length", "bad-chunk-size"],
)
async def test_parse_error_is_400_and_closes(payload):
    async with running(basic_app()) as server:
        async with raw_connection(server) as conn:
            await conn.send(payload)
            resp = await conn.read_final_response()
            assert resp.status == 400
            assert await conn.is_closed_by_peer(), "connection not closed after a parse error"
        # The server is unharmed.
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            assert (await conn.read_final_response()).status == 200


async def test_websocket_upgrade_refused_and_closed():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(
            request_bytes(
                "GET",
                "/",
                headers=[
                    ("Connection", "Upgrade"),
                    ("Upgrade", "websocket"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"),
                ],
            )
        )
        resp = await conn.read_final_response()
        assert 400 <= resp.status < 500 or resp.status == 505
        assert resp.status != 101
        assert await conn.is_closed_by_peer()


async def test_http2_prior_knowledge_preface_refused_and_closed():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        resp = await conn.read_final_response()
        assert resp.status in (400, 505)
        assert await conn.is_closed_by_peer()


async def test_unsupported_http_version_refused():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        resp = await conn.read_final_response()
        assert resp.status in (400, 505)
        assert await conn.is_closed_by_peer()


async def test_404_and_405_with_allow():
    app = basic_app()

    @app.post("/only-post")
    async def only_post(request):
        return "posted"

    async with running(app) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/no/such/path"))
        missing = await conn.read_final_response()
        assert missing.status == 404

        await conn.send(request_bytes("DELETE", "/data"))
        wrong = await conn.read_final_response()
        assert wrong.status == 405
        allow = {m.strip() for m in wrong.header("allow", "").split(",")}
        assert allow == {"GET", "HEAD"}

        await conn.send(request_bytes("GET", "/only-post"))
        wrong2 = await conn.read_final_response()
        assert wrong2.status == 405
        assert "POST" in {m.strip() for m in wrong2.header("allow", "").split(",")}
        # Error responses keep the connection usable.
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200


async def test_unhandled_exception_is_500_without_traceback(logs):
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/boom"))
        resp = await conn.read_final_response()
        assert resp.status == 500
        assert resp.body == b"Internal Server Error"
        assert b"Traceback" not in resp.body
        assert b"secret-detail-xyz" not in resp.body
        # The server carries on serving on the same connection.
        await conn.send(request_bytes("GET", "/"))
        assert (await conn.read_final_response()).status == 200
    errors = logs.at_least(logging.ERROR)
    assert errors, "the unhandled exception was not logged"
    assert any(
        (r.exc_info and "secret-detail-xyz" in str(r.exc_info[1])) or "secret-detail-xyz" in r.getMessage()
        for r in errors
    ), logs.describe(errors)


async def test_debug_mode_shows_traceback():
    async with running(basic_app(debug=True)) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/boom"))
        resp = await conn.read_final_response()
        assert resp.status == 500
        assert b"Traceback" in resp.body
        assert b"secret-detail-xyz" in resp.body
        assert b"RuntimeError" in resp.body


async def test_http_error_status_and_detail():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/teapot"))
        resp = await conn.read_final_response()
        assert resp.status == 418
        assert resp.body == b"teapot"


# --------------------------------------------------------------------------
# Standard headers
# --------------------------------------------------------------------------


async def test_date_and_server_headers_on_every_response():
    async with running(basic_app()) as server, raw_connection(server) as conn:
        paths = ["/", "/nothing", "/no/such", "/boom", "/numbers"]
        await conn.send(b"".join(request_bytes("GET", p) for p in paths))
        responses = await conn.read_responses(len(paths))
        assert [r.status for r in responses] == [200, 204, 404, 500, 200]
        now = datetime.now(timezone.utc)
        for r in responses:
            assert r.getall("server") == ["aioserve"], r.headers
            dates = r.getall("date")
            assert len(dates) == 1, r.headers
            assert dates[0].endswith(" GMT")
            parsed = email.utils.parsedate_to_datetime(dates[0])
            assert abs((parsed - now).total_seconds()) < 5


async def test_date_header_moves_with_the_clock():
    """Two requests more than a second apart, on one long-lived server, get different Dates."""
    async with running(basic_app()) as server, raw_connection(server) as conn:
        first = (await conn.request("GET", "/")).header("date")
        first_at = time.time()
        # A real wait: Date has one-second resolution and the server refreshes it on a timer of its
        # own, so only wall time passing can show the refresh (no event of ours marks it). The loop's
        # clock may run a little ahead of a loaded machine's wall clock, so check the wall clock too.
        await asyncio.sleep(1.2)
        for _ in range(20):
            if time.time() - first_at >= 1.2:
                break
            await asyncio.sleep(0.05)
        second = (await conn.request("GET", "/")).header("date")
        waited = time.time() - first_at
        assert first and second
        gap = email.utils.parsedate_to_datetime(second) - email.utils.parsedate_to_datetime(first)
        assert gap.total_seconds() >= 1, (first, second, f"{waited:.3f}s apart")


async def test_server_header_none_removes_it():
    async with running(basic_app(), server_header=None) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/") + request_bytes("GET", "/no/such"))
        for r in await conn.read_responses(2):
            assert not r.has("server"), r.headers
            assert r.has("date")


async def test_server_header_custom_value():
    async with running(basic_app(), server_header="custom-srv/1.0") as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/"))
        r = await conn.read_final_response()
        assert r.getall("server") == ["custom-srv/1.0"]


async def test_access_log_one_line_per_request():
    with capture_logs() as logs:
        async with running(basic_app(), access_log=True) as server, raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/n/11") + request_bytes("GET", "/no/such/thing"))
            await conn.read_responses(2)
    lines = [r.getMessage() for r in logs.records if r.name == "aioserve.access"]
    assert len(lines) == 2, lines
    assert "/n/11" in lines[0] and "200" in lines[0]
    assert "/no/such/thing" in lines[1] and "404" in lines[1]


async def test_access_log_off():
    with capture_logs() as logs:
        async with running(basic_app(), access_log=False) as server, raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            await conn.read_final_response()
    assert [r for r in logs.records if r.name == "aioserve.access"] == []


# --------------------------------------------------------------------------
# The founding promise: one slow handler never delays the others
# --------------------------------------------------------------------------


async def test_slow_handler_does_not_delay_other_connections():
    app = App()
    slow_started = asyncio.Event()

    @app.get("/slow")
    async def slow(request):
        slow_started.set()
        await asyncio.sleep(1)
        return text("slow")

    @app.get("/fast/{i:int}")
    async def fast(request, i: int):
        return {"i": i}

    async def get(port: int, path: str):
        conn = await RawConnection.open(port)
        try:
            await conn.send(request_bytes("GET", path))
            return await conn.read_final_response()
        finally:
            await conn.close()

    async with running(app) as server:
        slow_task = asyncio.ensure_future(get(server.port, "/slow"))
        try:
            await asyncio.wait_for(slow_started.wait(), 5)
            started = time.monotonic()
            fast = await asyncio.gather(*(get(server.port, f"/fast/{i}") for i in range(20)))
            elapsed = time.monotonic() - started
            assert not slow_task.done(), "the slow request finished before the fast ones"
            assert elapsed < 0.5, f"fast requests took {elapsed:.3f}s while a slow one was pending"
            assert [r.body for r in fast] == [f'{{"i":{i}}}'.encode() for i in range(20)]
            slow = await asyncio.wait_for(asyncio.shield(slow_task), 5)
            assert slow.status == 200 and slow.body == b"slow"
        finally:
            if not slow_task.done():
                slow_task.cancel()
                await asyncio.gather(slow_task, return_exceptions=True)


def test_public_names_exist():
    for name in ("App", "Router", "Request", "Response", "HTTPError", "ClientDisconnected",
                 "text", "html", "json", "stream", "redirect", "serve"):
        assert hasattr(aioserve, name), name
    assert issubclass(aioserve.ClientDisconnected, Exception)
    assert not issubclass(aioserve.ClientDisconnected, asyncio.CancelledError)


# --------------------------------------------------------------------------
# Property: any request stream, cut anywhere, gives the same answers in order
# --------------------------------------------------------------------------

@st.composite
def request_streams(draw):
    """A few requests (GET, POST with Content-Length, POST chunked) and the
    bodies the echo app must answer, plus the points where the bytes are cut."""
    wire = b""
    expected: list[bytes] = []
    for index in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["get", "length", "chunked"]))
        if kind == "get":
            wire += request_bytes("GET", f"/n/{index}")
            expected.append(str(index).encode())
            continue
        body = draw(st.binary(max_size=300))
        if kind == "length":
            wire += request_bytes("POST", "/echo", body=body, content_length=True)
        else:
            pieces, rest = [], body
            while rest:
                size = draw(st.integers(1, max(1, len(rest))))
                pieces.append(rest[:size])
                rest = rest[size:]
            upper = draw(st.booleans())
            encoded = b"".join(
                (b"%X" if upper else b"%x") % len(p) + b"\r\n" + p + b"\r\n" for p in pieces
            )
            wire += request_bytes("POST", "/echo", headers=[("Transfer-Encoding", "chunked")]) + encoded + b"0\r\n\r\n"
        expected.append(body)
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=12)))
    return wire, expected, cuts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=request_streams())
async def test_any_segmentation_gives_the_same_answers(case):
    wire, expected, cuts = case
    async with running(basic_app()) as server, raw_connection(server) as conn:
        start = 0
        for cut in [*cuts, len(wire)]:
            if cut > start:
                await conn.send(wire[start:cut])
                await asyncio.sleep(0)
                start = cut
        responses = await conn.read_responses(len(expected))
        assert [r.status for r in responses] == [200] * len(expected)
        assert [r.body for r in responses] == expected


async def test_trailer_fields_are_bounded_and_never_reach_the_next_request():
    """RFC 9112 7.1.2: trailers are dropped; they must neither leak into shared state nor into the
    head state of the request after them (a trailer ``Host`` once made the next request's own Host a
    duplicate, and every trailer grew a list shared by all connections)."""
    from aioserve import App, Response
    from aioserve import connection

    app = App()

    @app.post("/echo")
    async def echo(request):
        return Response(await request.body())

    @app.get("/")
    def index(request):
        return "ok"

    async with running(app) as server, raw_connection(server) as conn:
        trailer = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"3\r\nabc\r\n0\r\nHost: other\r\nX-Trailer: t\r\n\r\n")
        await conn.send(trailer + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second = await conn.read_responses(2, ["POST", "GET"])
        assert (first.status, first.body) == (200, b"abc")
        assert (second.status, second.body) == (200, b"ok")
        assert connection._NO_HEADERS == []
        big = b"X-Big: " + b"a" * 40000 + b"\r\n"
        await conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + big + b"\r\n")
        assert (await conn.read_final_response("POST")).status == 431
