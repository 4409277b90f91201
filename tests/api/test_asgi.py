"""ASGI both ways: Starlette and FastAPI apps under aioserve; an aioserve App under uvicorn.

The differential test serves one Starlette app with uvicorn and with aioserve and compares the
answers to a corpus of requests (status, headers apart from Date/Server/framing, body)."""
from __future__ import annotations

import asyncio
import contextlib
import socket
from contextlib import asynccontextmanager

import pytest
import uvicorn
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from aioserve import App, stream
from aioserve import Response as AioResponse
from aioserve.asgi import asgi_app
from aioserve.testing import AsyncTestClient
from tests.support import http_client, raw_connection, request_bytes, running


def starlette_app(events: dict) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        events["startup"] = True
        yield {"greeting": "hello"}
        events["shutdown"] = True

    async def home(request):
        return PlainTextResponse(request.state.greeting)

    async def echo(request):
        return Response(await request.body(), media_type=request.headers.get("content-type"))

    async def count(request):
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return JSONResponse({"size": n})

    async def numbers(request):
        async def gen():
            for i in range(5):
                yield f"{i}\n"
        return StreamingResponse(gen(), media_type="text/plain")

    async def forever(request):
        async def gen():
            try:
                while True:
                    yield b"x" * 1024
                    await asyncio.sleep(0.01)
            finally:
                events["stream_closed"].set()
        return StreamingResponse(gen(), media_type="text/plain")

    async def wait_disconnect(request: StarletteRequest):
        events["waiting"].set()
        message = await request.receive()
        message = await request.receive() if message["type"] == "http.request" else message
        events["disconnect"] = message["type"]
        events["disconnected"].set()
        return PlainTextResponse("late")

    async def boom(request):
        raise ValueError("before start")

    async def scope_view(request):
        s = request.scope
        return JSONResponse({"path": s["path"], "raw_path": s["raw_path"].decode(), "qs": s["query_string"].decode(),
                             "root_path": s["root_path"], "http_version": s["http_version"],
                             "headers": [[k.decode(), v.decode()] for k, v in s["headers"] if k != b"host"],  # ports differ
                             "asgi": s["asgi"]["version"], "client_host": s["client"][0], "scheme": s["scheme"]})

    async def cookie(request):
        r = PlainTextResponse("c")
        r.set_cookie("a", "1")
        r.set_cookie("b", "2")
        return r

    async def file(request):
        return FileResponse(events["file"])

    routes = [Route("/", home), Route("/echo", echo, methods=["POST", "PUT"]), Route("/count", count, methods=["POST"]),
              Route("/numbers", numbers), Route("/forever", forever), Route("/wait", wait_disconnect),
              Route("/boom", boom), Route("/scope/{rest:path}", scope_view), Route("/cookie", cookie),
              Route("/file", file), Route("/status/{code:int}", lambda r: Response(b"", int(r.path_params["code"])))]
    return Starlette(routes=routes, lifespan=lifespan)


def fresh_events(tmp_path) -> dict:
    path = tmp_path / "f.txt"
    if not path.exists():
        path.write_bytes(b"file body " * 1000)
    return {"stream_closed": asyncio.Event(), "waiting": asyncio.Event(), "disconnected": asyncio.Event(),
            "file": str(path)}


async def test_starlette_under_aioserve(tmp_path):
    events = fresh_events(tmp_path)
    async with running(starlette_app(events), max_body_size=None) as server:
        assert events["startup"]
        async with http_client(server) as client:
            r = await client.get("/")
            assert r.status_code == 200 and r.text == "hello"  # lifespan state in the scope
            r = await client.post("/echo", content=b"abc", headers={"content-type": "text/x"})
            assert r.content == b"abc" and r.headers["content-type"].startswith("text/x")
            r = await client.get("/numbers")
            assert r.text == "0\n1\n2\n3\n4\n" and r.headers["transfer-encoding"] == "chunked"
            r = await client.get("/file")
            assert r.content == b"file body " * 1000 and r.headers["content-length"] == "10000"
            r = await client.get("/cookie")
            assert r.headers.get_list("set-cookie") == ["a=1; Path=/; SameSite=lax", "b=2; Path=/; SameSite=lax"]
            r = await client.head("/")
            assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "5"
            r = await client.get("/scope/a%20b?x=1", headers={"X-Thing": "V"})
            scope = r.json()
            assert scope["path"] == "/scope/a b" and scope["raw_path"] == "/scope/a%20b" and scope["qs"] == "x=1"
            assert ["x-thing", "V"] in scope["headers"] and scope["http_version"] == "1.1"
            assert scope["asgi"] == "3.0" and scope["client_host"] == "127.0.0.1"
            r = await client.post("/count", content=b"z" * (3 * 2**20))  # a body in many reads, streamed
            assert r.json() == {"size": 3 * 2**20}
        async with raw_connection(server) as conn:  # exception before start: the server's own 500
            await conn.send(request_bytes("GET", "/boom"))
            response = await conn.read_final_response()
            assert response.status == 500 and response.header("content-length") == str(len(response.body))
    assert events["shutdown"]


async def test_app_raising_after_start_closes_the_connection():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        raise RuntimeError("after start")

    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            data = await asyncio.wait_for(conn.reader.read(), 5)  # read to EOF: the server closed
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"12345")


@pytest.mark.parametrize("misuse", ["none", "body_first", "start_twice"])
async def test_misbehaving_apps_get_500(misuse, caplog):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if misuse == "body_first":
            await send({"type": "http.response.body", "body": b"x"})
        elif misuse == "start_twice":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.start", "status": 200, "headers": []})

    async with running(app, lifespan="off") as server:
        async with http_client(server) as client:
            if misuse == "start_twice":  # the head is out by then: the connection is closed instead
                import httpx2

                with pytest.raises(httpx2.RemoteProtocolError):
                    await client.get("/")
            else:
                r = await client.get("/")
                assert r.status_code == 500 and r.text == "Internal Server Error"
    assert any("test_misbehaving_apps_get_500.<locals>.app" in rec.getMessage() for rec in caplog.records)


async def test_client_disconnect_reaches_the_app(tmp_path):
    events = fresh_events(tmp_path)
    async with running(starlette_app(events)) as server:
        async with raw_connection(server) as conn:  # waiting for the body's end, then the disconnect
            await conn.send(request_bytes("GET", "/wait"))
            await asyncio.wait_for(events["waiting"].wait(), 5)
        await asyncio.wait_for(events["disconnected"].wait(), 5)
        assert events["disconnect"] == "http.disconnect"


async def test_client_disconnect_mid_stream_closes_the_generator(tmp_path):
    events = fresh_events(tmp_path)
    async with running(starlette_app(events)) as server:
        async with raw_connection(server) as conn:  # mid-stream: the generator is closed
            await conn.send(request_bytes("GET", "/forever"))
            await asyncio.wait_for(conn.reader.readuntil(b"xxxx"), 5)
        await asyncio.wait_for(events["stream_closed"].wait(), 5)


async def test_client_leaving_a_stream_cancels_an_app_that_never_listens():
    """An app between two body chunks that never calls receive() (so no http.disconnect reaches it):
    when the client goes, the server cancels the app's own task, so its ``finally`` runs now."""
    cancelled = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        try:
            await asyncio.sleep(30)  # producing the next chunk, slowly
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with running(app) as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("GET", "/"))
            await asyncio.wait_for(conn.reader.readuntil(b"first"), 5)
        await asyncio.wait_for(cancelled.wait(), 5)

async def test_fastapi_under_aioserve():
    api = FastAPI()
    done = asyncio.Event()

    def note():
        done.set()

    @api.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q}

    @api.post("/later")
    async def later(tasks: BackgroundTasks):
        tasks.add_task(note)
        return {"queued": True}

    async with running(api) as server:
        async with http_client(server) as client:
            r = await client.get("/items/5?q=x")
            assert r.json() == {"item_id": 5, "q": "x"}
            assert (await client.get("/items/nope")).status_code == 422
            assert (await client.post("/later")).json() == {"queued": True}
            await asyncio.wait_for(done.wait(), 5)  # the background task ran after the response
            assert (await client.get("/openapi.json")).json()["paths"]


async def test_deadline_and_metrics_apply_to_asgi_apps():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await asyncio.sleep(10 if scope["path"] == "/slow" else 0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with running(app, deadline=0.2, metrics="/metrics") as server:
        async with http_client(server) as client:
            assert (await client.get("/fast")).text == "ok"
            r = await client.get("/slow")
            assert r.status_code == 503 and "retry-after" in r.headers
            assert "aioserve" in (await client.get("/metrics")).text


async def test_metrics_label_asgi_requests_by_the_framework_route_template():
    """``--metrics``: a Starlette or FastAPI request is recorded under the template of the route the
    framework matched (``scope["route"]``), one series for every ``/users/{id}``; a request no route
    matched, under its method."""
    async def user(request):
        return JSONResponse({"id": request.path_params["id"]})

    async def streamed(request):
        return StreamingResponse(iter([b"a", b"b"]))

    app = Starlette(routes=[Route("/users/{id}", user), Route("/stream", streamed)])
    async with running(app, metrics="/metrics") as server:
        async with http_client(server) as client:
            for path in ("/users/1", "/users/2", "/users/3", "/stream", "/missing"):
                await client.get(path)
            text = (await client.get("/metrics")).text
    prefix = "aioserve_requests_total{"
    counts = {line[len(prefix):line.rindex("}")]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith(prefix)}
    assert counts['route="/users/{id}",status="2xx"'] == 3, counts
    assert counts['route="/stream",status="2xx"'] == 1, counts
    assert counts['route="GET",status="4xx"'] == 1, counts
    assert not any("asgi_path" in key for key in counts), counts


async def test_a_finisher_sees_an_asgi_apps_headers():
    """An answer from ``send()`` carries its header lines rendered; a finisher (CORS here) that asks for
    ``headers`` gets them back parsed, adds its own, and the app's headers and close still go out."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-app", b"1"), (b"content-type", b"text/plain"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"hi"})

    wrapped = asgi_app(app)
    wrapped.add_cors(allow_origins=["https://a.example"])
    async with running(wrapped) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/", headers={"Origin": "https://a.example"}))
        response = await conn.read_final_response()
        assert response.status == 200 and response.body == b"hi"
        headers = {name.lower(): value for name, value in response.headers}
        assert headers["x-app"] == "1" and headers["content-type"] == "text/plain"
        assert headers["access-control-allow-origin"] == "https://a.example"
        assert "close" in response.connection_tokens()
        assert await conn.is_closed_by_peer()


async def test_asgi_app_in_the_test_client(tmp_path):
    events = fresh_events(tmp_path)
    async with AsyncTestClient(asgi_app(starlette_app(events))) as client:
        assert (await client.get("/")).text == "hello"
        assert (await client.get("/numbers")).text == "0\n1\n2\n3\n4\n"


# -- uvicorn -------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def under_uvicorn(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"
        assert server.started
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def aioserve_app(hooks: list) -> App:
    app = App()

    @app.on_startup
    async def up():
        hooks.append("up")

    @app.on_shutdown
    async def down():
        hooks.append("down")

    @app.get("/users/{uid:int}")
    async def user(request, uid: int):
        return {"id": uid}

    @app.post("/echo", max_body_size=100)
    async def echo(request):
        return await request.body()

    @app.post("/count")
    async def count(request):
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"n": n}

    @app.get("/numbers")
    async def numbers(request):
        async def gen():
            for i in range(3):
                yield f"{i}\n"
        return stream(gen(), content_type="text/plain")

    @app.get("/boom")
    async def boom(request):
        raise ValueError("x")

    return app


CORPUS_APP = [("GET", "/users/7", b""), ("GET", "/users/x", b""), ("POST", "/echo", b"a" * 100),
              ("POST", "/echo", b"a" * 101), ("POST", "/count", b"b" * 5000), ("GET", "/numbers", b""),
              ("GET", "/boom", b""), ("DELETE", "/users/7", b""), ("HEAD", "/users/7", b""), ("GET", "/nope", b"")]


def comparable(r) -> tuple:
    skip = {"date", "server", "keep-alive", "connection", "transfer-encoding"}
    headers = sorted((k.lower(), v) for k, v in r.headers.multi_items() if k.lower() not in skip)
    return r.status_code, headers, r.content


async def answers(port: int, corpus) -> list[tuple]:
    import httpx2

    out = []
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
        for method, path, body in corpus:
            out.append(comparable(await client.request(method, path, content=body or None)))
    return out


async def test_app_under_uvicorn_answers_as_under_aioserve():
    hooks: list = []
    async with under_uvicorn(aioserve_app(hooks)) as port:
        assert hooks == ["up"]
        via_uvicorn = await answers(port, CORPUS_APP)
    assert hooks == ["up", "down"]
    async with running(aioserve_app([])) as server:
        via_aioserve = await answers(server.port, CORPUS_APP)
    assert via_uvicorn == via_aioserve
    assert via_uvicorn[3][0] == 413 and via_uvicorn[6][0] == 500


CORPUS_ASGI = [
    ("GET", "/", b""), ("HEAD", "/", b""), ("POST", "/echo", b"hello"), ("PUT", "/echo", b""),
    ("POST", "/count", b"q" * 70000), ("GET", "/numbers", b""), ("GET", "/cookie", b""), ("GET", "/file", b""),
    ("GET", "/scope/x/y?z=1&z=2", b""), ("GET", "/scope/%7Euser", b""), ("GET", "/missing", b""),
    ("DELETE", "/", b""), ("GET", "/status/204", b""), ("GET", "/status/304", b""), ("GET", "/status/404", b""),
    ("OPTIONS", "/", b""), ("GET", "/boom", b""),
]


async def test_differential_uvicorn_vs_aioserve(tmp_path):
    """The same Starlette app, served by uvicorn and by aioserve, answers the corpus identically."""
    events = fresh_events(tmp_path)
    async with under_uvicorn(starlette_app(events)) as port:
        via_uvicorn = await answers(port, CORPUS_ASGI)
    again = fresh_events(tmp_path)  # the same file for both (ETag and Last-Modified)
    again["file"] = events["file"]
    async with running(starlette_app(again)) as server:
        via_aioserve = await answers(server.port, CORPUS_ASGI)
    for request, a, b in zip(CORPUS_ASGI, via_uvicorn, via_aioserve):
        assert a == b, request
    assert len(CORPUS_ASGI) == 17


async def test_head_of_a_long_stream_lets_the_app_finish():
    """The connection sends no body for HEAD: the app's body messages are dropped, so it is never left
    waiting for room in a queue nobody reads (its background work still runs)."""
    finished = asyncio.Event()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(20):  # more than the adapter queues ahead of the client
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        finished.set()

    async with running(app, lifespan="off") as server:
        async with raw_connection(server) as conn:
            await conn.send(request_bytes("HEAD", "/"))
            response = await conn.read_final_response("HEAD")
            assert response.status == 200 and response.body == b""
        await asyncio.wait_for(finished.wait(), 5)


async def test_app_under_uvicorn_sends_no_body_with_204_or_304():
    """A 204 or 304 Response that carries a body (conditional-GET middleware often keeps it) is sent
    without it, as aioserve's own server does: uvicorn would otherwise drop the connection."""
    app = App()

    @app.get("/status/{code:int}")
    async def status(request, code: int):
        return AioResponse(b"abc", status=code)

    async with under_uvicorn(app) as port, raw_connection(port) as conn:
        for method, code in (("GET", 204), ("GET", 304), ("HEAD", 204), ("HEAD", 304)):
            await conn.send(request_bytes(method, f"/status/{code}"))
            response = await conn.read_final_response(method)
            assert response.status == code and response.body == b"" and not response.has("content-length")
        await conn.send(request_bytes("HEAD", "/status/200"))  # HEAD: the length a GET has, no body
        response = await conn.read_final_response("HEAD")
        assert response.status == 200 and response.body == b"" and response.header("content-length") == "3"
        await conn.send(request_bytes("GET", "/status/200"))  # the same connection, still in step
        response = await conn.read_final_response()
        assert response.status == 200 and response.body == b"abc"


async def test_is_disconnected_works_for_an_app_under_another_asgi_server():
    """request.is_disconnected reads the channel's half-close too; the ASGI channel must answer it."""
    from aioserve import App

    app = App()

    @app.get("/disc")
    async def disc(request):
        return {"disconnected": request.is_disconnected}

    async with under_uvicorn(app) as port:
        import httpx2

        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
            r = await client.get("/disc")
    assert r.status_code == 200 and r.json() == {"disconnected": False}
