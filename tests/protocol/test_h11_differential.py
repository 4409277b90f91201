"""A differential check of aioserve's request parsing against h11, a strict pure-Python parser.

The same bytes go to ``h11.Connection(h11.SERVER)`` and, over a real socket, to an aioserve app whose
catch-all routes answer with what aioserve parsed (method, target, version, headers, body) in an
``X-Parsed`` header. Each side yields the list of requests it framed; the socket side half-closes after
sending, so both see the end of the input. The rule:

- where h11 refuses the input after k requests, aioserve must frame at most those k requests, and the
  same way (h11 rejects, aioserve accepts: a failure);
- where h11 accepts, aioserve frames the same requests (or refuses earlier: stricter is allowed);
- every request framed by both is framed identically.

Corpus: ``VALID`` below, the smuggling corpus of tests/smuggling_corpus.py, and two hypothesis corpora
(structured requests and byte-level mutations of valid ones, 300 examples each, derandomized).
The allow-list has five entries, each with its reason where it is defined: ``_origin_form``,
``_empty_query``, ``_transfer_coding_case``, ``_higher_minor`` (``KNOWN_DIFFERENCES``) and
``_skip_empty_lines``. Real
aioserve bugs found are ``AIOSERVE_BUGS``, each an ``xfail(strict=True)`` case.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass, field

import h11
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aioserve
from aioserve import App, Response
from tests.support import HOST, ProtocolViolation, RawConnection
from tests.support.smuggling_corpus import BAD_REQUESTS, GOOD_REQUESTS

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


@dataclass(frozen=True)
class Framed:
    """One request as a parser framed it."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in wire order
    body: bytes


@dataclass
class Outcome:
    requests: list[Framed] = field(default_factory=list)
    refused: str | None = None  # why the parser refused what followed the last framed request
    stopped: bool = False  # the parser stopped reading on purpose (Connection: close, HTTP/1.0)


# ---------------------------------------------------------------------------------------------------
# h11's framing
# ---------------------------------------------------------------------------------------------------

def frame_with_h11(payload: bytes) -> Outcome:
    """Frame ``payload`` with a fresh ``h11.Connection(h11.SERVER)`` per request (h11 keeps what it has
    not parsed in ``trailing_data``), so each request can start as RFC 9112 2.2 allows (see
    ``_skip_empty_lines``)."""
    out = Outcome()
    remaining = payload
    for _ in range(100):
        remaining = _skip_empty_lines(remaining)
        if not remaining:
            return out
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(remaining)
        conn.receive_data(b"")  # the client half-closes after sending, as on the socket side
        try:
            framed = _one_request(conn)
        except h11.RemoteProtocolError as exc:
            out.refused = f"h11: {exc}"
            return out
        if framed is None:
            return out
        out.requests.append(framed)
        # answer, so that h11 decides whether the connection goes on; a 4xx, so that a CONNECT or an
        # Upgrade does not switch protocols
        conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
        conn.send(h11.EndOfMessage())
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            out.stopped = True
            return out
        remaining = conn.trailing_data[0]
    raise AssertionError("more than 100 requests in one payload")


def _one_request(conn: h11.Connection) -> Framed | None:
    head: h11.Request | None = None
    body = bytearray()
    for _ in range(10_000):
        event = conn.next_event()
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return Framed(head.method.decode("latin-1"), head.target.decode("latin-1"), head.http_version.decode(),
                          tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers), bytes(body))
        else:  # ConnectionClosed, NEED_DATA after the end of the input
            return None
    raise AssertionError("h11 produced too many events")


# ---------------------------------------------------------------------------------------------------
# aioserve's framing, reported by the app itself
# ---------------------------------------------------------------------------------------------------

def parsed_app() -> App:
    app = App()

    async def report(request, rest: str = ""):
        target = request.raw_path + (b"?" + request.query_string if request.query_string else b"")
        body = await request.body()
        parsed = {"method": request.method, "target": target.decode("latin-1"), "version": request.http_version,
                  "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
                  "body": body.decode("latin-1")}
        return Response(b"parsed", headers=[("X-Parsed", base64.b64encode(orjson.dumps(parsed)).decode())])

    # Two routes because "{rest:path}" needs at least one character after the slash.
    app.route("/", methods=METHODS, max_body_size=None)(report)
    app.route("/{rest:path}", methods=METHODS, max_body_size=None)(report)
    return app


async def frame_with_aioserve(port: int, payload: bytes, methods: list[str]) -> Outcome:
    """Send ``payload``, half-close, and read answers until the server closes. ``methods`` (h11's
    reading of the requests) only says which answers are to HEAD and so have no body."""
    out = Outcome()
    conn = await RawConnection.open(port)
    try:
        await conn.send(payload)
        conn.writer.write_eof()
        for index in range(len(methods) + 8):
            method = methods[index] if index < len(methods) else "GET"
            try:
                response = await conn.read_response(method, timeout=5)
            except (ProtocolViolation, ConnectionResetError, asyncio.IncompleteReadError):
                return out  # closed (a refusal may be cut off by a reset: the data we sent was unread)
            if 100 <= response.status < 200:
                continue
            parsed = response.header("x-parsed")
            if parsed is None:
                out.refused = f"aioserve: {response.status} {response.body[:80]!r}"
                return out
            data = orjson.loads(base64.b64decode(parsed))
            out.requests.append(Framed(data["method"], data["target"], data["version"],
                                       tuple(tuple(pair) for pair in data["headers"]),
                                       data["body"].encode("latin-1")))
        raise AssertionError("aioserve answered more requests than were sent")
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------------
# The allow-list: each entry says where the two may differ, and why that is not a bug
# ---------------------------------------------------------------------------------------------------

def _origin_form(framed: Framed) -> Framed:
    """aioserve hands the app the origin form of an absolute-form target (RFC 9112 3.2.2: a server
    MUST accept it, and the authority then replaces Host); h11 passes the target through as sent."""
    match = re.fullmatch(r"(?i)https?://[^/?#]*(.*)", framed.target)
    if not match:
        return framed
    return Framed(framed.method, match.group(1) or "/", framed.version, framed.headers, framed.body)


def _empty_query(framed: Framed) -> Framed:
    """``/path?`` with an empty query: the app sees ``query_string == b""`` and cannot tell it from
    ``/path``; the request is framed the same (the difference is in what the app is told, not framing)."""
    if framed.target.endswith("?"):
        return Framed(framed.method, framed.target[:-1], framed.version, framed.headers, framed.body)
    return framed


def _transfer_coding_case(framed: Framed) -> Framed:
    """h11 lower-cases the ``Transfer-Encoding`` value it hands on (codings are case-insensitive, RFC
    9112 7); aioserve hands the value on as sent. Both frame the body as chunked."""
    headers = tuple((k, v.lower() if k == "transfer-encoding" else v) for k, v in framed.headers)
    return Framed(framed.method, framed.target, framed.version, headers, framed.body)


def _higher_minor(framed: Framed) -> Framed:
    """RFC 9110 6.2: aioserve processes HTTP/1.2 to 1.9 as HTTP/1.1 (and reports 1.1); h11 reports the
    version sent. Both frame the request the same way."""
    if framed.version[:2] == "1." and framed.version not in ("1.0", "1.1"):
        return Framed(framed.method, framed.target, "1.1", framed.headers, framed.body)
    return framed


KNOWN_DIFFERENCES = [_origin_form, _empty_query, _transfer_coding_case, _higher_minor]


def _skip_empty_lines(data: bytes) -> bytes:
    """RFC 9112 2.2: a server "SHOULD ignore at least one empty line (CRLF) received prior to the
    request-line"; aioserve (llhttp) does, h11 refuses them ("no request line received"). So the h11
    side drops them before each request (also applied to the payload as a whole: that is the 4th entry
    of the allow-list)."""
    while data.startswith(b"\r\n"):
        data = data[2:]
    return data


def _normalise(framed: Framed) -> Framed:
    for rule in KNOWN_DIFFERENCES:
        framed = rule(framed)
    return framed


def compare(payload: bytes, strict: Outcome, ours: Outcome) -> None:
    both = min(len(strict.requests), len(ours.requests))
    for i in range(both):
        assert _normalise(ours.requests[i]) == _normalise(strict.requests[i]), (
            f"request {i} framed differently\n  payload: {payload!r}\n  h11:      {strict.requests[i]}\n"
            f"  aioserve: {ours.requests[i]}")
    if len(ours.requests) > len(strict.requests) and not strict.stopped:
        raise AssertionError(
            f"h11 refused what aioserve accepted\n  payload: {payload!r}\n  {strict.refused}\n"
            f"  aioserve also framed: {ours.requests[both:]}")


# ---------------------------------------------------------------------------------------------------
# A server per loop, shared by every case of this module
# ---------------------------------------------------------------------------------------------------

LOOPS = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop


class Served:
    def __init__(self, runner: asyncio.Runner, server: aioserve.Server) -> None:
        self.runner = runner
        self.server = server

    def check(self, payload: bytes) -> tuple[Outcome, Outcome]:
        strict = frame_with_h11(payload)
        methods = [r.method for r in strict.requests]
        ours = self.runner.run(asyncio.wait_for(frame_with_aioserve(self.server.port, payload, methods), 20))
        compare(payload, strict, ours)
        return strict, ours


@pytest.fixture(scope="module", params=sorted(LOOPS))
def served(request):
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        server = runner.run(aioserve.serve(parsed_app(), host=HOST, port=0, access_log=False))
        try:
            yield Served(runner, server)
        finally:
            runner.run(asyncio.wait_for(server.shutdown(timeout=5), 15))


# ---------------------------------------------------------------------------------------------------
# The fixed corpus
# ---------------------------------------------------------------------------------------------------

def req(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode("latin-1") + body


VALID = [
    ("get", req("GET / HTTP/1.1\nHost: x\n\n")),
    ("get-query", req("GET /a/b?x=1&y=%20z HTTP/1.1\nHost: x\n\n")),
    ("get-encoded-path", req("GET /caf%C3%A9/%2F?q=%E2%82%AC HTTP/1.1\nHost: x\n\n")),
    ("head", req("HEAD /h HTTP/1.1\nHost: x\n\n")),
    ("delete", req("DELETE /items/7 HTTP/1.1\nHost: x\n\n")),
    ("options-path", req("OPTIONS /o HTTP/1.1\nHost: x\n\n")),
    ("http10", req("GET / HTTP/1.0\n\n")),
    ("http10-keep-alive", req("GET / HTTP/1.0\nConnection: keep-alive\n\n")),
    ("many-headers", req("GET / HTTP/1.1\nHost: x\nAccept: */*\nUser-Agent: t/1\nX-A: 1\nX-A: 2\nCookie: a=b; c=d\n\n")),
    ("header-ows", req("GET / HTTP/1.1\nHost: x\nX-A:   spaced  \nX-B:\ttabbed\t\nX-C:\n\n")),
    ("header-case", req("GET / HTTP/1.1\nHOST: x\nX-MiXeD: V\n\n")),
    ("post-cl", req("POST /p HTTP/1.1\nHost: x\nContent-Length: 5\n\n", b"hello")),
    ("put-cl-binary", req("PUT /p HTTP/1.1\nHost: x\nContent-Length: 4\n\n", b"\x00\r\n\xff")),
    ("patch-cl-zero", req("PATCH /p HTTP/1.1\nHost: x\nContent-Length: 0\n\n")),
    ("post-chunked", req("POST /p HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")),
    ("post-chunked-ext", req("POST /p HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"5;a=b;c=\"d\"\r\nhello\r\n0\r\n\r\n")),
    ("post-chunked-trailer", req("POST /p HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")),
    ("post-chunked-empty", req("POST /p HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"0\r\n\r\n")),
    ("expect-continue", req("POST /p HTTP/1.1\nHost: x\nExpect: 100-continue\nContent-Length: 2\n\n", b"ok")),
    ("pipelined-gets", req("GET /1 HTTP/1.1\nHost: x\n\nGET /2 HTTP/1.1\nHost: x\n\n")),
    ("pipelined-post-get", req("POST /1 HTTP/1.1\nHost: x\nContent-Length: 3\n\n", b"abc")
        + req("GET /2 HTTP/1.1\nHost: x\n\n")),
    ("pipelined-chunked-head", req("POST /1 HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"1\r\na\r\n0\r\n\r\n")
        + req("HEAD /2 HTTP/1.1\nHost: x\n\n")),
    ("pipelined-after-close", req("GET /1 HTTP/1.1\nHost: x\nConnection: close\n\nGET /2 HTTP/1.1\nHost: x\n\n")),
    ("absolute-form", req("GET http://x/abs?q=1 HTTP/1.1\nHost: x\n\n")),
    ("empty-line-before", req("\nGET / HTTP/1.1\nHost: x\n\n")),
    ("empty-line-between", req("GET /1 HTTP/1.1\nHost: x\n\n\nGET /2 HTTP/1.1\nHost: x\n\n")),
    ("fragment", req("GET /a#frag HTTP/1.1\nHost: x\n\n")),
    ("chunk-size-leading-zeros", req("POST /p HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n", b"005\r\nhello\r\n000\r\n\r\n")),
    ("obs-text-value", req("GET / HTTP/1.1\nHost: x\nX-A: \xff\xfe caf\xe9\n\n")),
]

# Inputs where aioserve is stricter than h11 (it refuses, h11 accepts): allowed by the rule, listed
# so that the check sees them and a change in either parser shows up here.
STRICTER = [
    ("bare-lf-lines", b"GET / HTTP/1.1\nHost: x\n\n"),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
    ("cl-list-same", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"),
    ("cl-twice-same", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("chunk-size-ows", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ("trailer-ctl", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: \x01\r\n\r\n"),
    ("trailer-content-length", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                               b"Content-Length: 7\r\n\r\n"),
    ("host-list", b"GET / HTTP/1.1\r\nHost: x, y\r\n\r\n"),
]

@pytest.mark.parametrize("payload", [p for _, p in STRICTER], ids=[n for n, _ in STRICTER])
def test_stricter_than_h11(served, payload):
    strict, ours = served.check(payload)
    assert strict.refused is None and len(strict.requests) == 1
    assert ours.requests == [] and ours.refused and ours.refused.startswith("aioserve: 400"), ours


def test_lowercase_method_is_an_unknown_method(served):
    """RFC 9110 9.1: methods are case-sensitive; ``get`` is a valid token h11 accepts, and an unknown
    method to aioserve: 501."""
    strict, ours = served.check(b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert strict.refused is None and len(strict.requests) == 1
    assert ours.requests == [] and ours.refused and ours.refused.startswith("aioserve: 501"), ours


SMUGGLING = [(f"bad-{name}", payload) for name, payload, _ in BAD_REQUESTS] + \
            [(f"good-{name}", payload) for name, payload, _ in GOOD_REQUESTS]

@dataclass(frozen=True)
class Bug:
    """A real aioserve bug this check found: its example runs as an xfail(strict=True) case, and
    generated inputs that match ``pattern`` are not reported again (the connection being rewritten must
    fix it; then the xfail fails, and the entry goes)."""

    example: bytes
    reason: str
    pattern: bytes  # a regex over the payload


AIOSERVE_BUGS: dict[str, Bug] = {}  # issue 16 fixed the one found (repeated SP in the request line)


def known_bug(payload: bytes) -> str | None:
    for name, bug in AIOSERVE_BUGS.items():
        if re.search(bug.pattern, payload):
            return name
    return None


def check_generated(served: Served, payload: bytes) -> None:
    """Check a generated payload; a difference explained by a listed bug is that bug's xfail case."""
    try:
        strict, ours = served.check(payload)
        event(f"h11 {'refused' if strict.refused else 'accepted'} {len(strict.requests)}; "
              f"aioserve {'refused' if ours.refused else 'accepted'} {len(ours.requests)}")
    except AssertionError:
        bug = known_bug(payload)
        if bug is None:
            raise
        event(f"known aioserve bug: {bug}")


@pytest.mark.parametrize("name", sorted(AIOSERVE_BUGS))
def test_known_aioserve_bugs(served, name, request):
    request.applymarker(pytest.mark.xfail(strict=True, reason=AIOSERVE_BUGS[name].reason))
    served.check(AIOSERVE_BUGS[name].example)


@pytest.mark.parametrize("payload", [p for _, p in VALID], ids=[n for n, _ in VALID])
def test_valid_requests_are_framed_like_h11(served, payload):
    strict, ours = served.check(payload)
    assert strict.refused is None and strict.requests, strict.refused
    assert ours.refused is None and len(ours.requests) == len(strict.requests), ours.refused


@pytest.mark.parametrize("payload", [p for _, p in SMUGGLING], ids=[n for n, _ in SMUGGLING])
def test_smuggling_corpus_against_h11(served, payload):
    served.check(payload)


# ---------------------------------------------------------------------------------------------------
# Hypothesis corpora
# ---------------------------------------------------------------------------------------------------

def pick(draw, usual: list, odd: list, one_in: int = 12):
    """Usually a valid choice; one time in ``one_in`` an odd one, so most requests stay close to valid
    (where the two parsers' disagreements hide) while each oddity still turns up often."""
    return draw(st.sampled_from(odd if odd and draw(st.integers(1, one_in)) == 1 else usual))


_PATH_USUAL = ["a", "b", "z", "0", "9", "-", ".", "_", "~", "%20", "%2F", "=", "&", ";", ",", "+", "*", "'", "(",
               ")", "!", "$", ":", "@", "/", "/", "?"]
_PATH_ODD = ["#", "%", "\x80", "\xe9", "\x7f", "\\", "|", "^", "`", "{", '"', "<", "[", "]"]
_VALUE_USUAL = ["a", "b", "1", " ", "\t", ",", ";", "=", '"', "/", "(", "*"]
_VALUE_ODD = ["\x80", "\xff", "\x00", "\x01", "\x7f", "\r", "\n", "\x0b"]
_FRAMING_VALUES = {"Connection": ["close", "keep-alive", "upgrade"],
                   "Transfer-Encoding": ["chunked", "gzip", "chunked, gzip", "CHUNKED", "identity"],
                   "Content-Length": ["0", "3", "+3", "03", "3, 3", "-1", "3 "],
                   "Upgrade": ["websocket", "h2c"],
                   "Expect": ["100-continue", "nope"]}


@st.composite
def one_request(draw) -> bytes:
    eol = pick(draw, ["\r\n"], ["\n"], 20)
    method = pick(draw, ["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"],
                  ["get", "FOO", "PROPFIND", "G@T", "CONNECT", "TRACE", "PRI", "M-SEARCH"])
    if draw(st.integers(1, 12)) == 1:
        target = draw(st.sampled_from(["*", "http://x/a", "HTTP://x:80", "x", "//a", "/a b", ""]))
    else:
        target = "/" + "".join(pick(draw, _PATH_USUAL, _PATH_ODD, 30) for _ in range(draw(st.integers(0, 8))))
    version = pick(draw, ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"],
                   ["HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/11", "HTTP/1", "HTTP/1.1\t"])
    lines = [method + pick(draw, [" "], ["  ", "\t"], 25) + target + pick(draw, [" "], ["  ", "\t"], 25) + version]
    if version != "HTTP/1.0" or draw(st.booleans()):
        lines.append("Host" + pick(draw, [": "], [":", " : "], 20) + pick(draw, ["x", "x:80", "[::1]:8"], ["", "a b", "x, y"]))
    for _ in range(draw(st.integers(0, 4))):
        name = pick(draw, ["X-A", "X-B", "Accept", "User-Agent", "Cookie", "Content-Type"],
                    ["Connection", "Expect", "Upgrade", "Transfer-Encoding", "Content-Length", "Host", "X A", "X\x00",
                     "", "X:", "X\x80", "\tX"])
        if name in _FRAMING_VALUES:
            value = draw(st.sampled_from(_FRAMING_VALUES[name]))
        else:
            value = "".join(pick(draw, _VALUE_USUAL, _VALUE_ODD, 30) for _ in range(draw(st.integers(0, 6))))
        lines.append(name + pick(draw, [": ", ":"], [":\t", " : ", ":  ", "\t:"], 20) + value)
    body = draw(st.binary(max_size=40))
    framing = pick(draw, ["none", "cl", "cl", "chunked", "chunked-ext"], ["cl-wrong", "both", "cl-twice"])
    raw_body = b""
    if framing in ("cl", "cl-wrong", "cl-twice"):
        length = len(body) + (draw(st.sampled_from([-2, -1, 1, 2])) if framing == "cl-wrong" else 0)
        lines.append(f"Content-Length: {length}")
        if framing == "cl-twice":
            lines.append(f"Content-Length: {length}")
        raw_body = body
    elif framing in ("chunked", "chunked-ext", "both"):
        lines.append("Transfer-Encoding: chunked")
        if framing == "both":
            lines.append(f"Content-Length: {len(body)}")
        ext = (pick(draw, [";a=b", ";a", ';a="x y"'], ["; a=b", ";", ";a=\x00", ";a=b c", ";=b"], 4)
               if framing == "chunked-ext" else "")
        size = draw(st.integers(1, 16))
        pieces = [body[i:i + size] for i in range(0, len(body), size)]
        raw_body = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext.encode("latin-1"), p) for p in pieces) + b"0\r\n\r\n"
    head = (eol.join(lines) + eol + eol).encode("latin-1")
    return head + raw_body


requests_corpus = st.lists(one_request(), min_size=1, max_size=2).map(b"".join)

_SEEDS = [p for _, p in VALID if b"Connection: close" not in p]
_INTERESTING = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00", b":", b";", b",", b"0", b"5", b"f", b"\x80", b"\x7f",
                b"a", b"-", b"/", b"?", b"#"]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(st.sampled_from(_INTERESTING))
        if what == "insert":
            data[at:at] = piece
        elif what == "replace":
            data[at:at + 1] = piece
        else:
            del data[at:at + 1]
    return bytes(data)


HYPOTHESIS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@HYPOTHESIS
@given(payload=requests_corpus)
def test_generated_requests_against_h11(served, payload):
    check_generated(served, payload)


@HYPOTHESIS
@given(payload=mutated())
def test_mutated_valid_requests_against_h11(served, payload):
    check_generated(served, payload)
