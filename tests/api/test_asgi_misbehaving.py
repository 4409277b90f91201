"""An ASGI app that fails after starting a streamed response: the connection is closed (the client sees
an incomplete message) and the log has one line naming the app (API.md), not a second one from the
connection about the stream it was writing."""
from __future__ import annotations

import logging

import pytest

from tests.support import capture_logs, raw_connection, running

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
PARTIAL = {"type": "http.response.body", "body": b"partial", "more_body": True}


async def raises_after_start(scope, receive, send):
    await send(START)
    await send(PARTIAL)
    raise ValueError("half way")


async def returns_mid_stream(scope, receive, send):
    await send(START)
    await send(PARTIAL)


@pytest.mark.parametrize("app", [raises_after_start, returns_mid_stream], ids=lambda a: a.__name__)
async def test_a_failure_after_start_closes_with_one_log_line_naming_the_app(app):
    with capture_logs() as logs:
        async with running(app, lifespan="off") as server, raw_connection(server) as conn:
            await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await conn.read_some()
            while b"partial" not in head:
                head += await conn.read_some()
            assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
            assert await conn.is_closed_by_peer()  # no last chunk: the client sees the message cut
    errors = logs.at_least(logging.ERROR)
    assert len(errors) == 1 and app.__name__ in errors[0].getMessage(), logs.describe()
