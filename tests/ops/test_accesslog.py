"""The access log's direct way (aioserve's default stderr handler, written without log records) and
when it must give way to ``logging``."""
from __future__ import annotations

import asyncio
import logging
import os
import re
from time import perf_counter

import pytest

from aioserve import App
from aioserve import accesslog
from aioserve.accesslog import WRITE_LIMIT, AccessLog, default_handler_only
from aioserve.logconfig import LOG_FORMAT
from aioserve.request import Request
from tests.support import raw_connection, request_bytes, running

LINE = re.compile(
    r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(\d+)\] INFO aioserve\.access: '
    r'127\.0\.0\.1:\d+ - "GET (\S+) HTTP/1\.1" (\d{3}) (\d+) \d+\.\d\dms\n'
)


class Stream:
    """What the default handler writes to: records each write, and wakes a waiting test."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.written = asyncio.Event()
        self.handler: logging.Handler | None = None

    def install(self) -> None:
        """Make aioserve's default handler the only one again. Called in the test body: pytest 9.2+
        attaches its capture handler to every non-propagating logger when a test starts."""
        logging.getLogger("aioserve").handlers[:] = [self.handler]

    def write(self, text: str) -> None:
        self.writes.append(text)
        self.written.set()

    def flush(self) -> None:
        pass

    @property
    def access_writes(self) -> list[str]:
        return [w for w in self.writes if " aioserve.access: " in w]  # not the lifecycle lines

    async def lines(self, count: int) -> list[str]:
        """Wait for ``count`` access lines; return every access line written."""
        async with asyncio.timeout(5):
            while "".join(self.access_writes).count("\n") < count:
                self.written.clear()
                await self.written.wait()
        return "".join(self.access_writes).splitlines(keepends=True)


@pytest.fixture
def default_stderr():
    """aioserve's default logging set-up (logconfig.configure_logging), with a stream we can read."""
    base = logging.getLogger("aioserve")
    access = logging.getLogger("aioserve.access")
    saved = (base.handlers[:], base.propagate, base.level, access.handlers[:], access.level)
    stream = Stream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.aioserve_default = True
    stream.handler = handler
    base.handlers[:] = [handler]
    base.propagate = False
    base.setLevel(logging.INFO)
    access.handlers[:] = []
    access.setLevel(logging.NOTSET)
    try:
        yield stream
    finally:
        base.handlers[:], base.propagate, level, access.handlers[:], access_level = saved
        base.setLevel(level)
        access.setLevel(access_level)


def _app() -> App:
    app = App()

    @app.get("/{name}")
    async def hello(request, name: str):
        return f"hi {name}"

    return app


async def test_default_set_up_gets_lines_written_directly_one_write_per_loop_turn(default_stderr):
    default_stderr.install()
    assert default_handler_only() is default_stderr.handler
    async with running(_app(), access_log=True) as server, raw_connection(server) as conn:
        await conn.send(b"".join(request_bytes("GET", f"/n{i}") for i in range(3)))
        await conn.read_responses(3)
        lines = await default_stderr.lines(3)
    assert len(default_stderr.access_writes) == 1  # three answers of one read: their lines in one write
    for i, line in enumerate(lines):
        match = LINE.fullmatch(line)
        assert match, line
        assert match.groups() == (str(os.getpid()), f"/n{i}", "200", str(len(f"hi n{i}")))


def test_the_direct_line_is_what_the_default_handler_would_write(monkeypatch, default_stderr):
    fixed = 1_790_000_000.123456
    monkeypatch.setattr(accesslog, "wall_clock", lambda: fixed)
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(loop)
        log.handler = logging.StreamHandler(Stream())
        monkeypatch.setattr(accesslog, "default_handler_only", lambda: log.handler)
        req = Request(None, "GET", b"/a%20b", b"", "/a b", [], "1.1", True, ("10.0.0.7", 5555))
        log.log(req, 201, 42, perf_counter())
        line = log.lines[0]
    finally:
        loop.close()
    duration = re.search(r" (\d+\.\d\dms)\n$", line).group(1)
    record = logging.LogRecord("aioserve.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d %d %s', ("10.0.0.7:5555", "GET", "/a%20b", "1.1", 201, 42, duration), None)
    record.created = fixed
    record.msecs = 123.0
    assert line == logging.Formatter(LOG_FORMAT).format(record) + "\n"


async def test_many_lines_leave_in_pieces_that_a_pipe_never_splits():
    stream = Stream()
    log = AccessLog(asyncio.get_running_loop())
    handler = logging.StreamHandler(stream)
    log.handler = handler
    log.lines = [f"line {i} " + "x" * (i % 97) + "\n" for i in range(400)]
    log.flush()
    assert len(stream.writes) > 1
    assert all(len(w) <= WRITE_LIMIT and w.endswith("\n") for w in stream.writes)
    assert "".join(stream.writes) == "".join(f"line {i} " + "x" * (i % 97) + "\n" for i in range(400))


async def test_a_handler_added_while_serving_gets_real_records(default_stderr):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    access = logging.getLogger("aioserve.access")
    default_stderr.install()
    async with running(_app(), access_log=True) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/first"))
        await conn.read_final_response()
        assert len(await default_stderr.lines(1)) == 1
        access.addHandler(handler)
        try:
            await conn.send(request_bytes("GET", "/second"))
            await conn.read_final_response()
        finally:
            access.removeHandler(handler)
    assert [(r.method, r.path, r.status) for r in records] == [("GET", "/second", 200)]
    assert records[0].client.startswith("127.0.0.1:") and records[0].duration_ms >= 0
    first, second = await default_stderr.lines(2)  # the second came through logging (propagated)
    assert LINE.fullmatch(first) and LINE.fullmatch(second) and "/second" in second


@pytest.mark.parametrize("custom", ["json formatter", "filter", "level", "own handler"])
def test_anything_but_the_default_set_up_goes_through_logging(default_stderr, custom):
    default_stderr.install()
    handler = default_stderr.handler
    assert default_handler_only() is handler
    if custom == "json formatter":
        from aioserve.logconfig import JsonFormatter
        handler.setFormatter(JsonFormatter())
    elif custom == "filter":
        handler.addFilter(lambda record: True)
    elif custom == "level":
        handler.setLevel(logging.WARNING)
    else:
        handler.aioserve_default = False
    assert default_handler_only() is None


async def test_a_decoded_line_break_cannot_forge_a_log_line(default_stderr):
    default_stderr.install()
    async with running(_app(), access_log=True) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", "/x%0A2026-01-01%20forged"))
        await conn.read_final_response()
        lines = await default_stderr.lines(1)
    assert len(lines) == 1 and "/x%0A2026-01-01%20forged" in lines[0]


async def test_the_target_is_logged_as_sent_query_included(default_stderr):
    default_stderr.install()
    async with running(_app(), access_log=True) as server, raw_connection(server) as conn:
        await conn.send(request_bytes("GET", '/x?user=3&next=%0Aforged&q="quoted"'))
        await conn.read_final_response()
        lines = await default_stderr.lines(1)
    assert len(lines) == 1 and '"GET /x?user=3&next=%0Aforged&q=%22quoted%22 HTTP/1.1"' in lines[0], lines
