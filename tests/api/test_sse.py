"""Server-Sent Events: the encoding, the headers, idle pings, flushing, and the client going away."""
from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from tests.support import HOST, READ_TIMEOUT, http_client, raw_connection, running

from aioserve import App, ServerSentEvent, sse
from aioserve.sse import encode_event

app = App()
state: dict = {}


@app.get("/events")
async def events(request):
    async def gen():
        yield ServerSentEvent(data={"n": 1}, event="tick", id="1")
        yield "two\nlines"
        yield ServerSentEvent("r", retry=1500)
        yield ["a", 1]
    return sse(gen(), ping=None)


@app.get("/resume")
async def resume(request):
    last = request.headers.get("last-event-id")

    async def gen():
        yield ServerSentEvent(f"after {last}", id=str(int(last) + 1))
    return sse(gen())


@app.get("/stepped")
async def stepped(request):
    """One event per step the test allows: proves each event is sent as soon as it is produced."""
    async def gen():
        for i in range(3):
            await state["step"].get()
            yield f"e{i}"
    return sse(gen(), ping=None)


@app.get("/idle")
async def idle(request):
    async def gen():
        try:
            yield "first"
            await asyncio.Event().wait()  # never produces again
            yield "never"
        finally:
            state["closed"].set()
    return sse(gen(), ping=float(request.query.get("ping", "0.05")))


@pytest.fixture
async def server():
    state.clear()
    state["step"] = asyncio.Queue()
    state["closed"] = asyncio.Event()
    async with running(app) as srv:
        yield srv


def test_event_encoding():
    assert encode_event(ServerSentEvent("a\r\nb\rc\nd", event="e", id=7, retry=10)) == \
        b"event: e\nid: 7\nretry: 10\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_event({"k": [1, 2]}) == b'data: {"k":[1,2]}\n\n'
    assert encode_event("") == b"data: \n\n"
    with pytest.raises(ValueError):
        ServerSentEvent("x", event="bad\nname")
    with pytest.raises(ValueError):
        ServerSentEvent("x", id="a\rb")
    with pytest.raises(TypeError):
        sse(iter([]))  # type: ignore[arg-type]

    async def gen():
        yield "x"
    with pytest.raises(ValueError):
        sse(gen(), ping=0)


def test_event_fields_are_checked_whenever_they_are_set():
    """Not only in the constructor: a field set later could inject SSE fields (a line break in the
    event name or id) or write ``retry: True``."""
    event = ServerSentEvent("x", event="ok", id="1", retry=5)
    for name, value in (("event", "x\nretry: 1"), ("event", "x\r"), ("id", "1\r\ndata: injected"), ("id", "a\0b"),
                        ("retry", True), ("retry", False), ("retry", -1), ("retry", 1.5), ("retry", "10")):
        with pytest.raises(ValueError):
            setattr(event, name, value)
    assert event.encode() == b"event: ok\nid: 1\nretry: 5\ndata: x\n\n"
    for retry in (True, False):
        with pytest.raises(ValueError):
            ServerSentEvent("x", retry=retry)
    event.event, event.id, event.retry, event.data = None, 2, 0, "y\nz"
    assert (event.event, event.id, event.retry) == (None, 2, 0)
    assert event.encode() == b"id: 2\nretry: 0\ndata: y\ndata: z\n\n"


async def test_events_headers_and_encoding_over_the_wire(server):
    async with raw_connection(server) as conn:
        await conn.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await conn.read_response()
    assert response.status == 200
    assert response.header("content-type") == "text/event-stream; charset=utf-8"
    assert response.header("cache-control") == "no-cache"
    assert response.header("x-accel-buffering") == "no"
    assert response.body == (b'event: tick\nid: 1\ndata: {"n":1}\n\n'
                             b"data: two\ndata: lines\n\n"
                             b"retry: 1500\ndata: r\n\n"
                             b'data: ["a",1]\n\n')
    assert response.chunk_sizes[:4] == [len(encode_event(x)) for x in (
        ServerSentEvent(data={"n": 1}, event="tick", id="1"), "two\nlines", ServerSentEvent("r", retry=1500), ["a", 1])]


async def test_last_event_id_is_readable(server):
    async with http_client(server) as client:
        r = await client.get("/resume", headers={"Last-Event-ID": "41"})
    assert r.text == "id: 42\ndata: after 41\n\n"


async def test_each_event_is_flushed_as_it_is_produced_httpx_streaming(server):
    async with http_client(server) as client:
        async with client.stream("GET", "/stepped") as r:
            lines = r.aiter_lines()
            for i in range(3):
                state["step"].put_nowait(None)  # allow exactly one more event
                line = await asyncio.wait_for(lines.__anext__(), READ_TIMEOUT)
                assert line == f"data: e{i}"
                assert await asyncio.wait_for(lines.__anext__(), READ_TIMEOUT) == ""


async def test_idle_pings_are_comments(server):
    async with raw_connection(server) as conn:
        await conn.send(b"GET /idle?ping=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        for _ in range(50):
            data += await conn.read_some()
            if data.count(b": ping\n\n") >= 2:
                break
        assert b"data: first\n\n" in data and data.count(b": ping\n\n") >= 2


async def test_client_going_away_closes_the_generator_within_a_second(server):
    async with raw_connection(server) as conn:
        await conn.send(b"GET /idle?ping=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        for _ in range(20):
            data += await conn.read_some()
            if b"data: first" in data:
                break
        assert b"data: first" in data
    # The generator is idle for a minute; the client left: its finally must run now, not at the next ping.
    await asyncio.wait_for(state["closed"].wait(), 1.0)


async def test_client_reset_closes_the_generator_within_a_second(server):
    async with raw_connection(server) as conn:
        await conn.send(b"GET /idle?ping=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await conn.read_some()
        for _ in range(20):
            if b"data: first" in data:
                break
            data += await conn.read_some()
        conn.reset()
    await asyncio.wait_for(state["closed"].wait(), 1.0)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_no_buffer_sees_each_event(server):
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sN", "--max-time", "10", f"http://{HOST}:{server.port}/stepped",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for i in range(3):
            state["step"].put_nowait(None)
            line = await asyncio.wait_for(proc.stdout.readline(), READ_TIMEOUT)
            assert line == f"data: e{i}\n".encode()
            assert await asyncio.wait_for(proc.stdout.readline(), READ_TIMEOUT) == b"\n"
        assert await asyncio.wait_for(proc.wait(), READ_TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_graceful_shutdown_ends_an_open_stream():
    state.clear()
    state["closed"] = asyncio.Event()
    import aioserve

    srv = await aioserve.serve(app, host=HOST, port=0, access_log=False)
    async with raw_connection(srv) as conn:
        await conn.send(b"GET /idle?ping=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        for _ in range(20):
            data += await conn.read_some()
            if b"data: first" in data:
                break
        await asyncio.wait_for(srv.shutdown(timeout=0.3), READ_TIMEOUT)
        await asyncio.wait_for(state["closed"].wait(), 1.0)
        rest = b""
        for _ in range(20):  # the stream is ended whole: its last chunk, then the close
            piece = await conn.read_some()
            if not piece:
                break
            rest += piece
        assert (data + rest).endswith(b"0\r\n\r\n")


async def test_graceful_shutdown_ends_an_event_stream_at_once_and_whole_but_lets_other_streams_finish():
    """API.md: graceful shutdown ends open streams. An event stream never ends by itself, so it is ended
    at once (its generator's finally runs, the chunked body gets its last chunk); a finite stream (a
    download) is left to finish within the graceful timeout."""
    from aioserve import StreamResponse, serve


    events_app = App()
    closed, downloading, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    live_started = asyncio.Event()

    @events_app.get("/live")
    async def live(request):
        async def gen():
            try:
                yield "first"
                live_started.set()  # "first" has been written
                await asyncio.Event().wait()  # never produces again
            finally:
                closed.set()
        return sse(gen(), ping=None)

    @events_app.get("/download")
    async def download(request):
        async def pieces():
            yield b"part1,"
            downloading.set()
            await release.wait()
            yield b"part2"
        return StreamResponse(pieces())

    srv = await serve(events_app, host=HOST, port=0, access_log=False)
    async with raw_connection(srv) as live_conn, raw_connection(srv) as file_conn:
        await live_conn.send(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        await file_conn.send(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(downloading.wait(), READ_TIMEOUT)
        await asyncio.wait_for(live_started.wait(), READ_TIMEOUT)
        shutdown = asyncio.ensure_future(srv.shutdown(timeout=30))
        await asyncio.wait_for(closed.wait(), READ_TIMEOUT)  # at once, not after 30 s
        live = await live_conn.read_response()
        assert live.status == 200 and live.body == b"data: first\n\n"  # whole: its last chunk came
        assert await live_conn.is_closed_by_peer()
        assert not shutdown.done()  # the download still runs
        release.set()
        download = await file_conn.read_response()
        assert download.body == b"part1,part2"
        await asyncio.wait_for(shutdown, READ_TIMEOUT)



async def test_client_going_away_closes_the_generator_behind_middleware_too():
    """With middleware the handler runs in a task (eager on 3.12+), whose first step returns the stream:
    the exchange must keep the stream's task, or the client's leaving cancels nothing."""
    state.clear()
    state["closed"] = asyncio.Event()
    behind = App()

    @behind.middleware
    async def passthrough(request, call_next):
        return await call_next(request)

    behind.get("/idle")(idle)
    async with running(behind) as srv:
        async with raw_connection(srv) as conn:
            await conn.send(b"GET /idle?ping=60 HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            for _ in range(20):
                data += await conn.read_some()
                if b"data: first" in data:
                    break
            assert b"data: first" in data
        await asyncio.wait_for(state["closed"].wait(), 1.0)
