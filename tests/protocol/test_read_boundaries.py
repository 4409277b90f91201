"""Checks that httptools gives no positions for, made from outside wherever the client's reads split
the bytes: RFC 9112 7.1.1, chunk extensions bounded per chunk (``limit_chunk_extension``, 400 past it)
and a trailer line left unfinished (431); RFC 9112 3, one SP between the request line's parts (400).

The connection is driven in this process with a recording transport, so each case controls exactly
where one read ends and the next begins (over TCP the kernel may merge writes).
"""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioserve import App
from aioserve.config import Config
from aioserve.connection import Connection
from aioserve.headcheck import SIZE_LINE_ALLOWANCE
from aioserve.shared import ServerState
from tests.support import RecordingTransport, wait_until

HEAD = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
LIMIT = 4096


def _app() -> App:
    app = App()

    @app.post("/echo")
    async def echo(request):
        return {"size": len(await request.body())}

    @app.get("/")
    async def index(request):
        return "ok"

    return app


def _body(chunks: list[tuple[bytes, bytes]], trailer: bytes = b"") -> bytes:
    """(extension, data) per chunk, then the last chunk and an optional trailer section."""
    return b"".join(b"%x%s\r\n%s\r\n" % (len(data), ext, data) for ext, data in chunks) + b"0\r\n" + trailer + b"\r\n"


def _split(payload: bytes, how: str) -> list[bytes]:
    if how == "one-read":
        return [payload]
    step = {"bytewise": 1, "every-7": 7, "every-1000": 1000}[how]
    return [payload[i:i + step] for i in range(0, len(payload), step)]


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole response (these answers always carry Content-Length)."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    length = head.lower().split(b"content-length: ")[1].split(b"\r\n")[0] if b"content-length: " in head.lower() else b"0"
    return len(body) >= int(length)


async def _feed(reads: list[bytes], done, app: App | None = None) -> bytes:
    """Feed ``reads`` one ``data_received`` each; the bytes written once ``done(written)`` (or a close)."""
    state = ServerState(app or _app(), Config(access_log=False), asyncio.get_running_loop())
    connection = Connection(state)
    transport = RecordingTransport()
    connection.connection_made(transport)
    try:
        for data in reads:
            connection.data_received(data)
            if transport.closing:
                break
            await asyncio.sleep(0)  # let a handler run between reads, as the loop would
        await wait_until(lambda: transport.closing or done(transport.data), 5, "no answer")
        return transport.data
    finally:
        connection.connection_lost(None)
        state.timers.close()


async def _answers(reads: list[bytes]) -> bytes:
    """The bytes written once the first answer (or a close) came."""
    return await _feed(reads, _complete)


SPLITS = ["one-read", "bytewise", "every-7", "every-1000"]


@pytest.mark.parametrize("how", SPLITS)
async def test_extensions_up_to_the_limit_are_accepted(how):
    chunks = [(b";n=" + b"v" * (LIMIT - 3), b"hello"), (b";a=b;c", b"x" * 300), (b"", b"yz")]
    answer = await _answers(_split(HEAD + _body(chunks), how))
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"size":307}'), answer[-300:]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("where", [0, 40])
async def test_one_extension_past_the_limit_is_400(how, where):
    chunks = [(b";k=v", b"d" * 3)] * 80
    chunks[where] = (b";n=" + b"v" * (LIMIT + SIZE_LINE_ALLOWANCE), b"abc")  # just past the bound
    answer = await _answers(_split(HEAD + _body(chunks), how))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"Chunk extensions too long" in answer


@pytest.mark.parametrize("how", ["one-read", "every-1000"])
async def test_many_chunks_each_at_the_limit_are_accepted(how):
    chunks = [(b";" + b"e" * (LIMIT - 1), b"%d" % (i % 10)) for i in range(200)]
    answer = await _answers(_split(HEAD + _body(chunks), how))
    assert answer.endswith(b'{"size":200}'), answer[-300:]


@pytest.mark.parametrize("how", ["bytewise", "every-1000"])
async def test_an_endless_extension_is_cut_before_it_ends(how):
    """The size line never ends: refused once its unfinished part passes the bound (no LF ever comes)."""
    payload = HEAD + b"5;n=" + b"v" * (10 * LIMIT)
    answer = await _answers(_split(payload, how))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


async def test_an_unfinished_trailer_line_past_the_header_limit_is_431():
    payload = HEAD + b"5\r\nhello\r\n0\r\nX-T: " + b"t" * (Config().limit_request_header_size + 1000)
    answer = await _answers(_split(payload, "every-1000"))
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


async def test_a_pipelined_chunked_request_is_bounded_from_its_next_read():
    """Behind another request in the same read the cursor's start is unknown: the size line that is
    unfinished when that read ends is still measured."""
    long_line = b"5;n=" + b"v" * (2 * LIMIT) + b"\r\nhello\r\n0\r\n\r\n"
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + HEAD + long_line[:LIMIT + 100]
    answer = await _answers([first, long_line[LIMIT + 100:]])
    assert b"HTTP/1.1 400 " in answer, answer[-300:]


def _head_with_fields(total: int) -> bytes:
    """GET / with header field lines (``Name: value\\r\\n``, Host included) adding up to ``total`` bytes."""
    fields = [b"Host: x\r\n"]
    size = len(fields[0])
    while total - size > 1100:
        fields.append(b"X-F%03d: %s\r\n" % (len(fields), b"v" * 1000))
        size += len(fields[-1])
    fields.append(b"X-Last: " + b"v" * (total - size - len(b"X-Last: \r\n")) + b"\r\n")
    return b"GET / HTTP/1.1\r\n" + b"".join(fields) + b"\r\n"


@pytest.mark.parametrize("cut", [None, 100, 20_000, 32_000])
async def test_the_header_section_limit_holds_wherever_the_reads_split_it(cut):
    """A head that arrives whole in a read within the limit is not counted field by field (it cannot
    pass the limit); when a head goes on past such a read, the fields that read brought still count."""
    limit = Config().limit_request_header_size
    for total, status in ((limit, b"200"), (limit + 1, b"431")):
        head = _head_with_fields(total)
        answer = await _answers([head] if cut is None else [head[:cut], head[cut:]])
        assert answer.startswith(b"HTTP/1.1 " + status + b" "), (total, cut, answer[:200])


GOOD_LINE = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("line", [
    b"GET  / HTTP/1.1", b"GET /  HTTP/1.1", b"GET   /xH HTTP/1.1", b"GET http://x/  HTTP/1.1",
    b"OPTIONS  * HTTP/1.1",
], ids=["after-method", "after-target", "shifted-onto-an-H", "absolute-form", "asterisk"])
@pytest.mark.parametrize("how", ["one-read", "bytewise", "every-7"])
async def test_repeated_spaces_in_the_request_line_are_400(line, how):
    """RFC 9112 3: ``method SP request-target SP HTTP-version``; llhttp skips the extra spaces itself."""
    answer = await _answers(_split(line + b"\r\nHost: x\r\n\r\n", how))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"one space" in answer


@pytest.mark.parametrize("payload", [
    b"\r\nGET /\r\n\r\n HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /\r\n\r\n", b"GET /x\r\nHost: x\r\n\r\n",
], ids=["fuzz-found", "bare", "with-a-header"])
@pytest.mark.parametrize("how", ["one-read", "bytewise", "every-7"])
async def test_a_request_line_without_a_version_is_400_in_any_split(payload, how):
    """llhttp reads ``GET /`` CRLF as HTTP/0.9 and ends the head there, so the line the connection
    gathered can end before the place a version's LF would be: 400 for the malformed line (or 505 for
    HTTP/0.9, when a later LF happens to sit there), never an IndexError's 500 (found by
    tests/hostile/test_fuzz.py with one byte per read)."""
    answer = await _answers(_split(payload, how))
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 505 ")), answer[:200]


@pytest.mark.parametrize("line", [b"GET /H HTTP/1.1", b"GET http://x/a%20b?q=1 HTTP/1.1", b"OPTIONS * HTTP/1.1"])
@pytest.mark.parametrize("how", ["one-read", "bytewise"])
async def test_well_formed_request_lines_pass(line, how):
    answer = await _answers(_split(line + b"\r\nHost: x\r\n\r\n", how))
    assert not answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
async def test_a_method_split_behind_a_pipelined_request_is_not_taken_for_a_line(cut):
    """The previous read ended with the first letters of the next method: the next read does not begin a
    request line, and a well-formed one must not be refused for where its LF seems to be."""
    second = b"OPTIONS /ab HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await _answers([GOOD_LINE + second[:cut], second[cut:]])
    assert answer.count(b"HTTP/1.1 ") == 2 and b" 400 " not in answer, answer


# --- requests pipelined behind others: where each line begins is followed through the read ----------

def _statuses(data: bytes) -> list[int]:
    """The status of every complete response in ``data`` (these answers always carry Content-Length)."""
    statuses = []
    while True:
        head, found, rest = data.partition(b"\r\n\r\n")
        if not found:
            return statuses
        lower = head.lower()
        length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0]) if b"content-length: " in lower else 0
        if len(rest) < length:
            return statuses
        statuses.append(int(head[9:12]))
        data = rest[length:]


async def _all_answers(reads: list[bytes], count: int, app: App | None = None) -> list[int]:
    """The statuses once ``count`` answers (or a close) came."""
    return _statuses(await _feed(reads, lambda data: len(_statuses(data)) >= count, app))


# Every way a request can end before the next one's line: no body, a Content-Length body, a chunked
# body with and without trailer fields, and a chunked body whose last chunk has an extension.
AHEAD = [
    GOOD_LINE,
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    HEAD + _body([(b";a=b", b"hello"), (b"", b"x" * 30)], b"X-T: 1\r\nX-U: 2\r\n"),
    b"\r\n" + GOOD_LINE,  # an empty line before a request line (RFC 9112 2.2)
    HEAD + _body([(b"", b"abc")]),
    b"GET /?q=1 HTTP/1.1\r\nHost:x\r\nAccept:  */*  \r\n\r\n",  # no OWS after a colon, OWS around a value
]


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("bad", [b"GET  / HTTP/1.1", b"GET /  HTTP/1.1", b"\r\nGET  / HTTP/1.1"],
                         ids=["after-method", "after-target", "after-an-empty-line"])
async def test_repeated_spaces_behind_pipelined_requests_are_400(bad, how):
    """RFC 9112 3 for a request that does not begin a read: behind each kind of request in the same read,
    or in a read of its own while the answers before it are pending, however the reads split."""
    payload = b"".join(AHEAD) + bad + b"\r\nHost: x\r\n\r\n"
    statuses = await _all_answers(_split(payload, how), len(AHEAD) + 1)
    assert statuses == [200] * len(AHEAD) + [400], statuses


@pytest.mark.parametrize("how", SPLITS)
async def test_well_formed_requests_behind_pipelined_requests_pass(how):
    """No request is refused for where its line was thought to begin: every split of the same stream."""
    payload = b"".join(AHEAD) + b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + GOOD_LINE
    statuses = await _all_answers(_split(payload, how), len(AHEAD) + 2)
    assert statuses == [200] * (len(AHEAD) + 2), statuses


@pytest.mark.parametrize("cut", [10, 40, 57, 58, 59, 60, 61, 63])
async def test_a_head_split_across_reads_is_followed_to_the_request_behind_it(cut):
    """The head of the first request ends in a later read than it began (a client that chose the split):
    the request behind it in that later read is still checked."""
    payload = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"
    statuses = await _all_answers([payload[:cut], payload[cut:]], 2)
    assert statuses == [200, 400], statuses


@pytest.mark.parametrize("how", ["one-read", "every-7"])
async def test_an_unknown_method_behind_pipelined_requests_is_501(how):
    """RFC 9110 9.1 for a request that does not begin a read."""
    payload = b"".join(AHEAD) + b"FOOBAR / HTTP/1.1\r\nHost: x\r\n\r\n"
    statuses = await _all_answers(_split(payload, how), len(AHEAD) + 1)
    assert statuses == [200] * len(AHEAD) + [501], statuses


@pytest.mark.parametrize("how", ["one-read", "every-7"])
async def test_http_1_2_behind_pipelined_requests_is_processed_as_1_1(how):
    """RFC 9110 6.2 for a request that does not begin a read: answered, and the one after it too."""
    payload = b"".join(AHEAD) + b"GET / HTTP/1.2\r\nHost: x\r\n\r\n" + GOOD_LINE
    statuses = await _all_answers(_split(payload, how), len(AHEAD) + 2)
    assert statuses == [200] * (len(AHEAD) + 2), statuses


async def test_a_line_read_while_an_answer_is_pending_is_checked():
    """The first handler is still waiting when the next request arrives in a read of its own."""
    release = asyncio.Event()
    app = _app()

    @app.get("/wait")
    async def wait(request):
        await release.wait()
        return "waited"

    async def drive() -> list[int]:
        return await _all_answers([b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"],
                                  2, app)

    run = asyncio.ensure_future(drive())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    release.set()
    assert await run == [200, 400]


LAST = {  # what ends the stream, and the answers it gets after those ahead of it
    b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n": [400],
    b"\r\nGET /  HTTP/1.1\r\nHost: x\r\n\r\n": [400],
    b"FOOBAR / HTTP/1.1\r\nHost: x\r\n\r\n": [501],
    b"GET / HTTP/1.2\r\nHost: x\r\n\r\n" + GOOD_LINE: [200, 200],
    b"\r\n" + GOOD_LINE: [200],
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_split_of_a_pipelined_stream_gets_the_same_answers(data):
    """Requests of every kind pipelined, then one the line check decides, cut into reads anywhere: the
    answers are those of the stream sent in one read."""
    ahead = data.draw(st.lists(st.sampled_from(AHEAD), min_size=1, max_size=5))
    last = data.draw(st.sampled_from(sorted(LAST)))
    payload = b"".join(ahead) + last
    cuts = sorted(data.draw(st.sets(st.integers(1, len(payload) - 1), max_size=12)))
    reads = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    want = [200] * len(ahead) + LAST[last]
    assert await _all_answers(reads, len(want)) == want, reads
