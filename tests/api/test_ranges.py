"""Validators and Range parsing (ranges.py): the rules as unit tests, then fuzzed against a server."""
from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioserve.ranges import MAX_RANGES, evaluate_conditions, if_range_allows, parse_range
from tests.support import HOST, request_bytes
from tests.support import ServerProcess, parse_responses


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-0", 10, [(0, 0)]),
    ("bytes=-3", 10, [(7, 9)]),
    ("bytes=5-", 10, [(5, 9)]),
    ("bytes=0-1,1-3,8-,9-9", 10, [(0, 3), (8, 9)]),
    ("bytes=0-1, 2-3", 10, [(0, 3)]),  # adjacent: coalesced
    ("bytes=8-9,0-1", 10, [(0, 1), (8, 9)]),  # sorted
    ("bytes=0-" + "9" * 5000, 10, [(0, 9)]),  # absurdly long numbers are just "huge"
    ("bytes=10-", 10, []), ("bytes=-0", 10, []), ("bytes=0-", 0, []), ("bytes=-5", 0, []),
    ("bytes=3-1", 10, None), ("items=0-1", 10, None), ("bytes=x", 10, None), ("bytes=-", 10, None),
    ("bytes=1-2-3", 10, None), ("bytes=\u0661-2", 10, None), ("", 10, None), ("bytes", 10, None),
    ("bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)), 10, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


def test_merge_is_linear_after_sort():
    """Thousands of overlapping ranges never reach the merge (capped), and the cap's worth is quick."""
    header = "bytes=" + ",".join(f"{i}-{i + 1000}" for i in range(100_000))
    t = time.perf_counter()
    assert parse_range(header, 10**9) is None
    assert time.perf_counter() - t < 0.05
    header = "bytes=" + ",".join(f"{i}-{i + 1000}" for i in range(MAX_RANGES))
    assert parse_range(header, 10**9) == [(0, MAX_RANGES - 1 + 1000)]


ETAG = '"abc"'


@pytest.mark.parametrize("headers, expected", [
    ({}, 200),
    ({"if-none-match": ETAG}, 304), ({"if-none-match": 'W/"abc"'}, 304), ({"if-none-match": '"x", "abc"'}, 304),
    ({"if-none-match": "*"}, 304), ({"if-none-match": '"x"'}, 200),
    ({"if-none-match": '"x"', "if-modified-since": "Sun, 06 Nov 2094 08:49:37 GMT"}, 200),
    ({"if-modified-since": "Sun, 06 Nov 2094 08:49:37 GMT"}, 304),
    ({"if-modified-since": "Sun, 06 Nov 1994 08:49:37 GMT"}, 200),
    ({"if-modified-since": "garbage"}, 200),
    ({"if-match": '"x"'}, 412), ({"if-match": ETAG}, 200), ({"if-match": 'W/"abc"'}, 412), ({"if-match": "*"}, 200),
    ({"if-unmodified-since": "Sun, 06 Nov 1994 08:49:37 GMT"}, 412),
])
def test_conditions(headers, expected):
    assert evaluate_conditions(headers, ETAG, 1_000_000_000) == expected


def test_if_range():
    date = "Sun, 09 Sep 2001 01:46:40 GMT"
    mtime = 1_000_000_000.0  # that date
    assert if_range_allows(None, ETAG, date)
    assert if_range_allows(ETAG, ETAG, date) and if_range_allows(date, ETAG, date, mtime)
    assert not if_range_allows('W/"abc"', ETAG, date) and not if_range_allows('"x"', ETAG, date)
    assert not if_range_allows("Sun, 09 Sep 2001 01:46:41 GMT", ETAG, date, mtime)


def test_if_range_date_must_be_a_strong_validator():
    """RFC 9110 13.1.5: a date matches only if it is a strong validator (8.8.2.2): the Last-Modified of a
    file changed within the last second is weak (it can change again in that second, keeping its date)."""
    date = "Sun, 09 Sep 2001 01:46:40 GMT"
    mtime = 1_000_000_000.25
    assert if_range_allows(date, ETAG, date, mtime, now=mtime + 1.0)
    assert if_range_allows(date, ETAG, date, mtime, now=mtime + 3600)
    for now in (mtime, mtime + 0.5, mtime + 0.99, mtime - 10):  # within the second, or a file from the future
        assert not if_range_allows(date, ETAG, date, mtime, now=now), now
    assert not if_range_allows(date, ETAG, date)  # strength unknown: weak
    assert if_range_allows(ETAG, ETAG, date, mtime, now=mtime)  # a strong ETag is exact at any age


range_specs = st.one_of(
    st.tuples(st.integers(0, 20_000), st.integers(0, 20_000)).map(lambda p: f"{p[0]}-{p[1]}"),
    st.integers(0, 20_000).map(lambda n: f"{n}-"),
    st.integers(0, 20_000).map(lambda n: f"-{n}"),
    st.text(alphabet="0123456789-, =abx", max_size=12),
)
range_headers = st.one_of(
    st.lists(range_specs, min_size=1, max_size=20).map(lambda specs: "bytes=" + ",".join(specs)),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(header=range_headers, size=st.integers(0, 20_000))
def test_parse_range_fuzz(header, size):
    result = parse_range(header, size)
    if result is None or result == []:
        return
    assert len(result) <= MAX_RANGES
    previous_end = -2
    for start, end in result:
        assert 0 <= start <= end < size
        assert start > previous_end + 1  # sorted, disjoint, not adjacent
        previous_end = end


SIZE = 10_000
DATA = bytes(i % 251 for i in range(SIZE))


@pytest.fixture(scope="module")
def file_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranges")
    (root / "data.bin").write_bytes(DATA)
    with ServerProcess(*["tests.support.files_app:app", "--port", "0", "--no-access-log"],
                       env={"AIOSERVE_TEST_FILES": str(root)}) as proc:
        yield proc.wait_listening().port


def fetch(port: int, header: str) -> tuple[int, dict, bytes]:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(request_bytes("GET", "/f/data.bin", [("Range", header), ("Connection", "close")]))
        data = b""
        for _ in range(10_000):
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    [response] = parse_responses(data)
    return response.status, {k.lower(): v for k, v in response.headers}, response.body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=range_headers)
def test_range_fuzz_against_the_server(file_server, header):
    """Never a 500; every answer is a valid 200, 206 or 416 with the right bytes."""
    status, headers, body = fetch(file_server, header)
    assert status in (200, 206, 416), (header, status)
    if status == 200:
        assert body == DATA
    elif status == 416:
        assert headers["content-range"] == f"bytes */{SIZE}"
    elif headers["content-type"].startswith("multipart/byteranges"):
        from test_staticfiles import parse_byteranges

        parts = parse_byteranges(headers["content-type"], body)
        assert 2 <= len(parts) <= MAX_RANGES
        for content_range, payload in parts:
            first, last = content_range.split()[1].split("/")[0].split("-")
            assert payload == DATA[int(first):int(last) + 1]
    else:
        first, last = headers["content-range"].split()[1].split("/")[0].split("-")
        assert body == DATA[int(first):int(last) + 1]
