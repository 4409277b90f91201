"""The app the operations tests serve (workers, sockets, TLS, proxies, logs, nginx)."""
from __future__ import annotations

import asyncio
import logging
import os
import time

from aioserve import App, Request, stream

app = App()
log = logging.getLogger("aioserve.testapp")


@app.on_startup
async def started() -> None:
    log.warning("startup hook ran in %d", os.getpid())


@app.on_shutdown
async def stopped() -> None:
    log.warning("shutdown hook ran in %d", os.getpid())


@app.get("/")
async def index(request: Request):
    return {"pid": os.getpid()}


@app.get("/whoami")
async def whoami(request: Request):
    return {"pid": os.getpid(), "client": list(request.client) if request.client else None,
            "scheme": request.scheme}


@app.get("/slow")
async def slow(request: Request):
    delay = float(request.query.get("s", "1"))
    log.warning("slow request started in %d", os.getpid())
    await asyncio.sleep(delay)
    return {"pid": os.getpid(), "slept": delay}


@app.get("/block")
async def block(request: Request):
    time.sleep(float(request.query.get("s", "30")))  # a stuck event loop, on purpose
    return "unblocked"


@app.get("/stream")
async def numbers(request: Request):
    count = int(request.query.get("n", "100"))

    async def gen():
        for i in range(count):
            yield f"{i}\n"
            if i % 10 == 0:
                await asyncio.sleep(0)

    return stream(gen(), content_type="text/plain")


@app.get("/health", access_log=False)
async def health(request: Request):
    return "ok"


failing = App()


@failing.on_startup
async def cannot_start() -> None:
    raise RuntimeError("database unreachable")
