"""Helpers for the real-time tests (deadlines, shedding, metrics): a server context and a tiny,
strict raw HTTP/1.1 client. Every read is bounded with ``asyncio.wait_for``; 127.0.0.1 only."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator

import aioserve

HOST = "127.0.0.1"
TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def running(app, **settings) -> AsyncIterator[aioserve.Server]:
    settings.setdefault("host", HOST)
    settings.setdefault("port", 0)
    settings.setdefault("access_log", False)
    server = await aioserve.serve(app, **settings)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(timeout=5), 15)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Client:
    """One keep-alive connection; ``request()`` sends and reads one Content-Length framed answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), TIMEOUT)
        return cls(reader, writer)

    def send(self, path: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def read(self, timeout: float = TIMEOUT) -> Reply:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        first, *rest = head.decode("latin-1").split("\r\n")
        status = int(first.split(" ", 2)[1])
        headers = {}
        for line in rest:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(n), timeout) if n else b""
        return Reply(status, headers, body)

    async def request(self, path: str, **kw) -> Reply:
        self.send(path, **kw)
        return await self.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)


async def get(port: int, path: str, **kw) -> Reply:
    client = await Client.connect(port)
    try:
        return await client.request(path, **kw)
    finally:
        await client.close()


async def wait_until(predicate, timeout: float = 3.0) -> None:
    """Poll ``predicate`` on the loop (bounded) for state that has no event to wait on."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
