"""A server in this process, on 127.0.0.1 and a free port, and httpx2 clients that talk to it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import httpx2

import aioserve

from .wire import HOST, READ_TIMEOUT


@contextlib.asynccontextmanager
async def running(app, **settings) -> AsyncIterator[aioserve.Server]:
    """Serve ``app`` for the duration of the block; shut it down (bounded) on the way out."""
    settings.setdefault("host", HOST)
    settings.setdefault("port", 0)
    settings.setdefault("access_log", False)
    server = await aioserve.serve(app, **settings)
    try:
        assert isinstance(server.port, int) and server.port > 0
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(timeout=5), 15)


def upgraded_session(server):
    """The WebSocket session of the server's one upgraded connection (None before the upgrade)."""
    return next((c.upgraded for c in server.state.connections if c.upgraded is not None), None)


def base_url(server) -> str:
    return f"http://{HOST}:{server.port}"


@contextlib.asynccontextmanager
async def http_client(server, **kwargs) -> AsyncIterator[httpx2.AsyncClient]:
    """An httpx2 client bound to ``server`` that never consults proxy variables."""
    kwargs.setdefault("timeout", READ_TIMEOUT)
    async with httpx2.AsyncClient(base_url=base_url(server), trust_env=False, **kwargs) as client:
        yield client


def sync_client(**kwargs) -> httpx2.Client:
    """A blocking httpx2 client (for servers in a subprocess) that never consults proxy variables."""
    kwargs.setdefault("timeout", 10.0)
    return httpx2.Client(trust_env=False, **kwargs)


def current_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop this test runs on, to start a subprocess on the same kind."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
