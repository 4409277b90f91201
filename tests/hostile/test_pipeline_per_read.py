"""One read may carry thousands of small pipelined requests (256 KiB of 30-byte GETs is about 8,700).
``limit_pipeline`` must bound what they cost at once, within the read too: past it the rest of the
read waits, unparsed, until the answers before it are written. Before, every request of the read was
answered (or its handler started) at once: 8,700 answers of 60 KB in one 525 MB write, or 8,700
handlers running together.
"""
from __future__ import annotations

import asyncio

import pytest

from aioserve import App
from aioserve.config import Config
from aioserve.connection import Connection
from aioserve.shared import ServerState
from tests.support import RecordingTransport, raw_connection, running
from tests.support.wire import parse_responses

BIG = b"x" * 60_000
LIMIT = 32  # the default limit_pipeline


def pipelined(path: str, count: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode() * count


def big_app() -> tuple[App, dict]:
    app = App()
    running_now = {"now": 0, "most": 0}

    @app.get("/big")
    async def big(request):  # answered inline: its answer joins the read's one write
        return BIG

    @app.get("/wait")
    async def wait(request):  # suspends: each request of the read has a running handler
        running_now["now"] += 1
        running_now["most"] = max(running_now["most"], running_now["now"])
        await asyncio.sleep(0)
        running_now["now"] -= 1
        return "ok"

    return app, running_now


class LargestWrite(RecordingTransport):
    """Records only sizes: the largest single write and the total."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.total = 0

    def write(self, data: bytes) -> None:
        self.largest = max(self.largest, len(data))
        self.total += len(data)


async def test_one_read_of_thousands_of_requests_writes_at_most_the_limit_of_answers_at_once():
    app, _ = big_app()
    state = ServerState(app, Config(access_log=False), asyncio.get_running_loop())
    app.compile()
    connection = Connection(state)
    transport = LargestWrite()
    connection.connection_made(transport)
    count = 2000
    connection.data_received(pipelined("/big", count))
    assert transport.largest <= (LIMIT + 1) * (len(BIG) + 200), transport.largest  # 120 MB before
    for _ in range(10 * count):  # bounded: the held rest is parsed a limit's worth per loop turn
        if transport.total >= count * len(BIG):
            break
        await asyncio.sleep(0)
    assert transport.total >= count * len(BIG)  # every request was answered in the end
    assert transport.largest <= (LIMIT + 1) * (len(BIG) + 200), transport.largest


@pytest.mark.parametrize("path", ["/big", "/wait"])
async def test_every_request_of_a_huge_pipelined_read_is_answered_in_order(path):
    app, running_now = big_app()
    count = 1500
    async with running(app, access_log=False) as server, raw_connection(server) as conn:
        requests = b"".join(f"GET {path}?n={n} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for n in range(count))
        await conn.send(requests)
        responses = await conn.read_responses(count, timeout=30)
    assert [r.status for r in responses] == [200] * count
    if path == "/big":
        assert all(r.body == BIG for r in responses)
    else:
        assert all(r.body == b"ok" for r in responses)
        assert running_now["most"] <= LIMIT + 1, running_now  # 1,500 handlers at once before
