"""The app the hostile-client measurements serve: ``python -m aioserve benchmarks.hostile.app:app``."""
from __future__ import annotations

import asyncio

from aioserve import App, Response

app = App()

MiB = 1024 * 1024
BIG = b"r" * (8 * MiB)  # one shared body: what each slow reader pins is the server's doing, not ours


@app.get("/")
async def index(request):
    return "ok"


@app.get("/big")
async def big(request):
    return Response(BIG, content_type="application/octet-stream")


@app.get("/big-fresh")
async def big_fresh(request):
    return Response(b"f" * (8 * MiB), content_type="application/octet-stream")


@app.post("/slow-upload", max_body_size=None)
async def slow_upload(request):
    """Discards the body, sleeping a little per piece: slower than the network can deliver."""
    size = 0
    delay = float(request.query.get("delay", "0.002"))
    async for piece in request.stream():
        size += len(piece)
        await asyncio.sleep(delay)
    return {"size": size}
