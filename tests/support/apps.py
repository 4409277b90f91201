"""Apps the tests serve, in process or in a subprocess (``python -m aioserve tests.support.apps:NAME``).

This module imports only aioserve and the standard library. Each app is built once at import; the
hostile-client app is also a factory (``hostile_app()``) returning a fresh app with its ``Probe``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from aioserve import App, Request, Response, ServerSentEvent, WebSocket, sse, stream

# --------------------------------------------------------------------------
# The hostile-client app: handlers that report what they saw
# --------------------------------------------------------------------------


class Probe:
    """Counters and events shared between a test and the handlers of one app."""

    def __init__(self) -> None:
        self.started = 0  # handlers entered
        self.finished = 0  # handlers that returned normally
        self.paths: list[str] = []
        self.release: asyncio.Event | None = None  # created lazily on the test's loop
        self.produced = 0  # bytes a streaming generator has yielded
        self.generator_closed = False
        self.consumed = 0  # bytes a streaming upload handler has read
        self.errors: list[BaseException] = []

    def event(self) -> asyncio.Event:
        if self.release is None:
            self.release = asyncio.Event()
        return self.release


def hostile_app(probe: Probe | None = None) -> tuple[App, Probe]:
    probe = probe or Probe()
    app = App()

    @app.get("/")
    async def index(request):
        probe.started += 1
        probe.paths.append(request.path)
        return "ok"

    @app.get("/long/{rest:path}")
    async def long_path(request, rest: str):
        return {"len": len(request.raw_path)}

    @app.get("/headers")
    async def headers(request):
        return {"count": len(request.headers.items())}

    @app.post("/echo")
    async def echo(request):
        body = await request.body()
        return {"size": len(body)}

    @app.post("/small", max_body_size=10)
    async def small(request):
        return {"size": len(await request.body())}

    @app.post("/upload", max_body_size=None)
    async def upload(request):
        size = 0
        async for piece in request.stream():
            size += len(piece)
            probe.consumed = size
        return {"size": size}

    @app.post("/slow-upload", max_body_size=None)
    async def slow_upload(request):
        # Waits for the test's signal before it reads a byte: the server must not buffer meanwhile.
        await asyncio.wait_for(probe.event().wait(), 30)
        size = 0
        async for piece in request.stream():
            size += len(piece)
            probe.consumed = size
        return {"size": size}

    @app.get("/sleep")
    async def sleep(request):
        probe.started += 1
        await asyncio.sleep(float(request.query.get("s", "1")))
        probe.finished += 1
        return "slept"

    @app.get("/block")
    async def block(request):
        probe.started += 1
        probe.paths.append(request.path)
        await asyncio.wait_for(probe.event().wait(), 30)
        probe.finished += 1
        return "released"

    @app.get("/hang")
    async def hang(request):
        probe.started += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            probe.generator_closed = True  # reused as "the hung handler was cancelled"
            raise
        return "never"

    @app.get("/big")
    async def big(request):
        size = int(request.query.get("n", str(8 * 1024 * 1024)))
        return Response(b"b" * size, content_type="application/octet-stream")

    @app.get("/endless")
    async def endless(request):
        piece = b"e" * 65536
        limit = int(request.query.get("n", str(1 << 30)))

        async def gen():
            try:
                while probe.produced < limit:
                    probe.produced += len(piece)
                    yield piece
            finally:
                probe.generator_closed = True

        return stream(gen(), content_type="application/octet-stream")

    @app.get("/boom")
    async def boom(request):
        raise RuntimeError("handler failure on purpose")

    @app.get("/cancelled")
    async def cancelled(request):
        raise asyncio.CancelledError()

    @app.get("/split-value")
    async def split_value(request):
        return Response(b"x", headers={"X-Evil": "a\r\nInjected: 1"})

    @app.get("/split-name")
    async def split_name(request):
        return Response(b"x", headers={"X-Evil\r\nInjected": "1"})

    @app.get("/split-lf")
    async def split_lf(request):
        return Response(b"x", headers={"X-Evil": "a\nInjected: 1"})

    @app.get("/split-set")
    async def split_set(request):
        response = Response(b"x")
        response.headers["X-Evil"] = "a\r\nInjected: 1"
        return response

    @app.get("/split-cookie")
    async def split_cookie(request):
        response = Response(b"x")
        response.set_cookie("a", "b", path="/\r\nInjected: 1")
        return response

    return app, probe


#: Served by the subprocess tests: ``python -m aioserve tests.support.apps:hostile_served_app``.
hostile_served_app, _subprocess_probe = hostile_app()
SHUTDOWN_MARKER = "HOSTILE-SHUTDOWN-HOOK-RAN"
HOSTILE_INFLIGHT_MARKER = "HOSTILE-IN-FLIGHT"


@hostile_served_app.get("/inflight")
async def _hostile_inflight(request):
    print(HOSTILE_INFLIGHT_MARKER, file=sys.stderr, flush=True)
    await asyncio.sleep(float(request.query.get("s", "1")))
    return "full-answer-" + request.query.get("i", "")


@hostile_served_app.on_shutdown
async def _hostile_on_shutdown():
    print(SHUTDOWN_MARKER, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# CLI tests: an app with a request that stays in flight (``inflight_app``, ``create_inflight_app``)
# --------------------------------------------------------------------------

INFLIGHT_MARKER = "AIOSERVE-TEST-IN-FLIGHT"

inflight_app = App()


@inflight_app.get("/")
async def _inflight_index(request):
    return "ready"


@inflight_app.get("/loop")
async def _loop_kind(request):
    return type(asyncio.get_running_loop()).__module__


@inflight_app.get("/inflight")
async def _inflight(request):
    # Tell the test (which reads our stderr) that the request is being handled,
    # then keep working for a while: a graceful shutdown must let this finish.
    print(INFLIGHT_MARKER, file=sys.stderr, flush=True)
    await asyncio.sleep(0.75)
    return "finished"


def create_inflight_app():
    """Factory form of ``inflight_app`` for ``--factory``."""
    return inflight_app


# --------------------------------------------------------------------------
# Operations tests (workers, sockets, TLS, proxies, logs, nginx): ``ops_app`` and ``failing_app``
# --------------------------------------------------------------------------

ops_app = App()
log = logging.getLogger("aioserve.testapp")


@ops_app.on_startup
async def started() -> None:
    log.warning("startup hook ran in %d", os.getpid())


@ops_app.on_shutdown
async def stopped() -> None:
    log.warning("shutdown hook ran in %d", os.getpid())


@ops_app.get("/")
async def ops_index(request: Request):
    return {"pid": os.getpid()}


@ops_app.get("/whoami")
async def whoami(request: Request):
    return {"pid": os.getpid(), "client": list(request.client) if request.client else None,
            "scheme": request.scheme}


@ops_app.get("/slow")
async def slow(request: Request):
    delay = float(request.query.get("s", "1"))
    log.warning("slow request started in %d", os.getpid())
    await asyncio.sleep(delay)
    return {"pid": os.getpid(), "slept": delay}


@ops_app.get("/block")
async def ops_block(request: Request):
    time.sleep(float(request.query.get("s", "30")))  # a stuck event loop, on purpose
    return "unblocked"


@ops_app.get("/stream")
async def numbers(request: Request):
    count = int(request.query.get("n", "100"))

    async def gen():
        for i in range(count):
            yield f"{i}\n"
            if i % 10 == 0:
                await asyncio.sleep(0)

    return stream(gen(), content_type="text/plain")


@ops_app.get("/events/ticks")
async def ticks(request: Request):
    """One event at once, then an open stream: a proxy that buffered would hold the event back."""
    async def gen():
        yield ServerSentEvent({"n": 0, "pid": os.getpid()}, event="tick", id="0")
        await asyncio.sleep(60)

    return sse(gen(), ping=None)


@ops_app.websocket("/ws/echo")
async def ws_echo(ws: WebSocket):
    await ws.accept()
    async for message in ws:
        await ws.send(message)


@ops_app.get("/health", access_log=False)
async def health(request: Request):
    return "ok"


failing_app = App()


@failing_app.on_startup
async def cannot_start() -> None:
    raise RuntimeError("database unreachable")


# --------------------------------------------------------------------------
# /metrics on, served with several workers: ``metered_app``
# --------------------------------------------------------------------------

metered_app = App()
metered_app.enable_metrics("/metrics")


@metered_app.get("/")
async def metered_index(request: Request):
    return {"pid": os.getpid()}


def burn_then_quick_app() -> tuple[App, list[int]]:
    """``/burn`` holds the loop for 100 ms of CPU, then awaits; ``/quick`` (a 20 ms budget) records in the
    list that it ran. Both await, so each runs in a task. Sent in one read, ``/quick`` waits behind ``/burn``
    past its budget: admission control must answer it 503 without running it (the list stays empty)."""
    app = App()
    ran: list[int] = []

    @app.get("/burn")
    async def burn(request):
        end = time.perf_counter() + 0.1
        while time.perf_counter() < end:  # holds the loop, as a CPU-bound handler does
            pass
        await asyncio.sleep(0)
        return "burnt"

    @app.get("/quick", deadline=0.02)
    async def quick(request):
        ran.append(1)
        await asyncio.sleep(0)
        return "quick"

    return app, ran
