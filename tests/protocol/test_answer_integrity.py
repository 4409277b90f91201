"""One request, one final answer, framed so the client can tell a whole answer from a cut one.

Each case was a bug found by a hunt over raw sockets: an answer the client would misread (a second
final response, a 1xx as the answer, a cut close-delimited body that looks complete, a body longer
than its Content-Length), a body dropped (an h2c Upgrade served as HTTP/1.1), or a field acted on
where the RFCs say it is not (Host beside an absolute-form target, Connection in a trailer).
"""
from __future__ import annotations

import asyncio
import json
import logging

from aioserve import App, StreamResponse

from tests.support import HOST, capture_logs, raw_connection, running, wait_until
from tests.support.wire import parse_response

WS_HEAD = (b"GET /ws HTTP/%s\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


def _app() -> tuple[App, asyncio.Event]:
    app = App()
    started = asyncio.Event()

    @app.post("/echo")
    async def echo(request):
        return {"body": (await request.body()).decode(), "host": request.headers.get("host")}

    @app.get("/host")
    async def host(request):
        return {"path": request.path, "host": request.headers.get("host")}

    @app.post("/ignore", max_body_size=1000)
    async def ignore(request):  # answers at once, never reading the body
        return "ignored"

    @app.get("/")
    async def index(request):
        return "ok"

    @app.get("/early-hints")
    async def early_hints(request):
        from aioserve import Response
        return Response(b"", status=103)

    @app.get("/slowstream")
    async def slowstream(request):
        async def pieces():
            yield b"first "
            started.set()
            await asyncio.sleep(30)  # cut long before this (the test's bound)
            yield b"never"
        return StreamResponse(pieces())

    @app.get("/overrun")
    async def overrun(request):
        async def pieces():
            yield b"abc"
            yield b"defghij"  # past the 5 bytes announced
        return StreamResponse(pieces(), content_length=5)

    @app.get("/broken10")
    async def broken10(request):
        async def pieces():
            yield b"partial"
            raise RuntimeError("the source failed")
        return StreamResponse(pieces())

    @app.websocket("/ws")
    async def ws(socket):
        await socket.accept()
        await socket.close()

    return app, started


def _json(response) -> dict:
    return json.loads(response.body)


def _logged(logs, text: str) -> bool:
    """An error was logged whose message or exception says ``text``."""
    for record in logs.at_least(logging.ERROR):
        exc = record.exc_info[1] if record.exc_info else None
        if text in record.getMessage() or (exc is not None and text in str(exc)):
            return True
    return False


def _open_files() -> list[str]:
    """What this process's descriptors point at (Linux's /proc; empty elsewhere)."""
    import os
    names = []
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return names


async def _read_to_end(conn, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the server closes, and whether it closed with a reset (not a clean FIN)."""
    data = bytes(conn.buffer)
    conn.buffer.clear()
    for _ in range(1000):
        try:
            piece = await asyncio.wait_for(conn.reader.read(65536), timeout)
        except ConnectionResetError:
            return data, True
        if not piece:
            return data, False
        data += piece
    raise AssertionError("the server never closed")


# -- an Upgrade the server does not take is an ordinary request, body included --------------------
async def test_an_h2c_upgrade_served_as_http11_reads_its_body():
    app, _ = _app()
    async with running(app) as server:
        for request in (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
            b"POST /echo HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello",
        ):
            async with raw_connection(server) as conn:
                conn.write(request)
                response = await conn.read_response("POST")
                assert response.status == 200, response
                assert _json(response)["body"] == "hello"
                assert "close" in response.connection_tokens()  # nothing after it is read as HTTP/1.1
                assert await conn.is_closed_by_peer()


async def test_an_h2c_upgrade_body_arriving_in_later_reads_and_over_the_limit():
    app, _ = _app()
    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                            b"Content-Length: 11\r\n\r\nhello")
            await asyncio.sleep(0.05)  # a second read for the rest
            await conn.send(b" world")
            response = await conn.read_response("POST")
            assert _json(response)["body"] == "hello world"
        async with raw_connection(server) as conn:  # the route's limit still holds for a chunked one
            conn.write(b"POST /ignore HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n")
            response = await conn.read_response("POST")
            assert response.status == 200 and response.body == b"ignored"
            assert await conn.is_closed_by_peer()


async def test_a_websocket_handshake_over_http10_or_with_a_body_is_refused():
    app, _ = _app()
    async with running(app) as server:
        for request, reason in (
            (WS_HEAD % b"1.0" + b"\r\n", b"HTTP/1.1 GET"),
            (WS_HEAD % b"1.1" + b"Content-Length: 5\r\n\r\nhello", b"body"),
            (WS_HEAD % b"1.1" + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"body"),
        ):
            async with raw_connection(server) as conn:
                conn.write(request)
                response = await conn.read_response()
                assert response.status == 400 and reason in response.body, response
                assert await conn.is_closed_by_peer()
        async with raw_connection(server) as conn:  # HEAD: refused, and answered with a head alone
            conn.write(b"HEAD" + (WS_HEAD % b"1.1")[3:] + b"\r\n")
            response = await conn.read_response("HEAD")
            assert response.status == 400 and response.body == b""
            assert await conn.is_closed_by_peer()
        async with raw_connection(server) as conn:  # an empty body is no body: the handshake stands
            conn.write(WS_HEAD % b"1.1" + b"Content-Length: 0\r\n\r\n")
            response = await conn.read_response()
            assert response.status == 101


# -- one final answer per request --------------------------------------------------------------------
async def test_a_body_that_goes_wrong_after_its_answer_gets_no_second_answer():
    app, _ = _app()
    async with running(app, timeout_body=0.3) as server:
        for request in (
            # past the route's 1000 bytes, in chunks (the length is not known at the head)
            b"POST /ignore HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + b"a" * 2000,
            # a malformed chunk size line after a good chunk
            b"POST /ignore HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n\r\n",
            # a body that never finishes (timeout_body)
            b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        ):
            async with raw_connection(server) as conn:
                conn.write(request)
                response = await conn.read_response("POST")
                assert response.status == 200 and response.body == b"ignored"
                rest, _ = await _read_to_end(conn)
                assert rest == b"", f"a second answer followed the first: {rest[:120]!r}"


async def test_a_1xx_status_is_never_sent_as_the_answer():
    app, _ = _app()
    async with running(app) as server:
        with capture_logs() as logs:
            async with raw_connection(server) as conn:
                conn.write(b"GET /early-hints HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
                first, second = await conn.read_responses(2)
        assert first.status == 500
        assert second.status == 200 and second.body == b"ok"
        assert _logged(logs, "103 is not a final HTTP status"), logs.describe()


# -- a cut body reads as cut ----------------------------------------------------------------------
async def test_a_close_delimited_stream_cut_by_a_half_close_ends_with_a_reset():
    app, started = _app()
    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(b"GET /slowstream HTTP/1.0\r\n\r\n")
            await asyncio.wait_for(started.wait(), 5)
            conn.writer.write_eof()
            data, reset = await _read_to_end(conn)
            assert data.startswith(b"HTTP/1.1 200 OK") and b"first " in data
            assert reset, "a clean close would make the cut HTTP/1.0 body look complete"
        started.clear()
        async with raw_connection(server) as conn:  # chunked: the missing last chunk says it was cut
            await conn.send(b"GET /slowstream HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(started.wait(), 5)
            conn.writer.write_eof()
            data, _ = await _read_to_end(conn)
            assert data.startswith(b"HTTP/1.1 200 OK") and not data.endswith(b"0\r\n\r\n")
            try:
                parse_response(data, eof=True)
            except AssertionError:
                pass  # incomplete: as it must be
            else:
                raise AssertionError("the cut chunked body parsed as complete")


async def test_a_close_delimited_stream_that_fails_ends_with_a_reset():
    app, _ = _app()
    async with running(app) as server:
        with capture_logs():
            async with raw_connection(server) as conn:
                await conn.send(b"GET /broken10 HTTP/1.0\r\n\r\n")
                data, reset = await _read_to_end(conn)
        # A reset may take the bytes still unsent with it: what matters is that no clean close ends the body.
        assert reset and (not data or data.startswith(b"HTTP/1.1 200 OK"))


async def test_a_stream_never_writes_past_its_content_length():
    app, _ = _app()
    async with running(app) as server:
        with capture_logs() as logs:
            async with raw_connection(server) as conn:
                await conn.send(b"GET /overrun HTTP/1.1\r\nHost: x\r\n\r\n")
                data, _ = await _read_to_end(conn)
            await wait_until(lambda: _logged(logs, "longer than the 5 bytes"), timeout=5)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Content-Length: 5" in head
        assert body == b"abc", body  # the piece that would overrun is not written; the close says cut


# -- fields the RFCs say are not what they look like -------------------------------------------------
async def test_an_absolute_form_target_names_the_host():
    app, _ = _app()
    async with running(app) as server:
        async with raw_connection(server) as conn:
            conn.write(b"GET http://victim.example:8080/host HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
            response = await conn.read_response()
            assert _json(response) == {"path": "/host", "host": "victim.example:8080"}
            conn.write(b"GET http://[::1]/host HTTP/1.0\r\n\r\n")  # 1.0 may send no Host at all
            response = await conn.read_response()
            assert _json(response) == {"path": "/host", "host": "[::1]"}
        async with raw_connection(server) as conn:
            conn.write(b"GET http://user:secret@victim.example/host HTTP/1.1\r\nHost: victim.example\r\n\r\n")
            response = await conn.read_response()
            assert response.status == 400 and b"userinfo" in response.body


async def test_connection_in_a_trailer_is_refused_not_acted_on():
    app, _ = _app()
    async with running(app) as server:
        async with raw_connection(server) as conn:
            conn.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await conn.read_response("POST")
            assert response.status == 400 and b"trailer" in response.body
            assert await conn.is_closed_by_peer()
        async with raw_connection(server) as conn:  # another trailer field is dropped, as before
            conn.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\nGET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
            first, second = await conn.read_responses(2, ["POST", "GET"])
            assert _json(first)["body"] == "hello" and second.body == b"ok"


async def test_a_stream_cut_by_the_client_runs_its_whole_cleanup():
    """EOF and then the connection's loss both end streams: the producer is cancelled once, so a
    cleanup that awaits (an unsubscribe, say) runs to its end."""
    app = App()
    started, cleaned = asyncio.Event(), asyncio.Event()

    @app.get("/events")
    async def events(request):
        async def pieces():
            try:
                yield b"data: 1\n\n"
                started.set()
                await asyncio.sleep(30)  # cut long before this
            finally:
                await asyncio.sleep(0.05)
                await asyncio.sleep(0)
                cleaned.set()
        return StreamResponse(pieces())

    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(cleaned.wait(), 5)


async def test_a_fragment_never_reaches_a_query_value():
    app = App()

    @app.get("/q")
    async def q(request):
        return dict(request.query)

    async with running(app) as server:
        async with raw_connection(server) as conn:
            conn.write(b"GET /q?a=1#frag HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await conn.read_response()
            assert response.status == 400 and b"fragment" in response.body
        async with raw_connection(server) as conn:
            conn.write(b"GET /q?a=1&b=%23 HTTP/1.1\r\nHost: x\r\n\r\n")  # an encoded "#" is data
            assert _json(await conn.read_response()) == {"a": "1", "b": "#"}


async def test_requests_behind_an_answer_that_closes_are_let_go(tmp_path):
    """A close-delimited stream (HTTP/1.0) ends the connection: the streams and files pipelined behind
    it were waiting for a turn that never came, holding a task, a file and an in-flight place."""
    from aioserve import FileResponse

    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * 300_000)
    app = App()
    app.enable_metrics("/metrics")

    @app.get("/s")
    async def s(request):
        async def gen():
            yield b"data\n"
        return StreamResponse(gen())

    @app.get("/file")
    async def file(request):
        return FileResponse(str(big))

    def streams_waiting() -> list:
        return [t for t in asyncio.all_tasks() if "_stream" in repr(t.get_coro())]

    async with running(app) as server:
        async with raw_connection(server) as conn:
            keep = b"Connection: keep-alive\r\n\r\n"
            conn.write(b"GET /s HTTP/1.0\r\n" + keep + b"GET /s HTTP/1.0\r\n" + keep + b"GET /file HTTP/1.0\r\n" + keep)
            data, _ = await _read_to_end(conn)
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"data\n")  # the first, then the close
        await wait_until(lambda: not streams_waiting(), timeout=5, message="streams left waiting for their turn")
        await wait_until(lambda: server.state.observer.in_flight == 0, timeout=5)
        assert str(big) not in _open_files()
