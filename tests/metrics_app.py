"""An app with /metrics on, served with several workers by test_workers_metrics.py."""
from __future__ import annotations

import os

from aioserve import App, Request

app = App()
app.enable_metrics("/metrics")


@app.get("/")
async def index(request: Request):
    return {"pid": os.getpid()}
