"""Response compression: gzip (zlib), br (``brotli``) and zstd (``compression.zstd`` / ``backports.zstd``).

``App(compress=True)`` or ``App(compress=CompressionSettings(...))`` adds ``Compressor.finish`` to the
app's finishers, which see every response before it is encoded. It leaves alone what must not or
need not be compressed: a route with ``compress=False``, a response that already has a
Content-Encoding, a 204/206/304 (and any status without a body), a type that does not compress
(images, archives, video...), a body under ``minimum_size``, and files (those are served through
precompressed siblings only, so sendfile and Range keep working).

Every compressible response gets ``Vary: Accept-Encoding``, compressed or not, since the choice
depends on that header. A compressed one gets ``Content-Encoding`` and a weak ETag (the bytes
differ; the meaning does not). A HEAD answer gets exactly the headers the GET would, and no body: the
compressed length when the GET sends one, no length (chunked) when the GET streams. Nothing a HEAD
would stream is compressed at all.

Streams (SSE included) are compressed chunk by chunk, each flushed, so a client sees every event
when it is sent. A body of ``offload_size`` bytes or more is compressed in a worker thread: the
response becomes a stream (chunked) whose one chunk is produced off the event loop, so a 10 MB JSON
answer does not stall every other connection for the tens of milliseconds it takes (a HEAD of such
an answer gets the same head and is never compressed).

br and zstd are optional (``pip install aioserve[compression]``); without them only gzip is offered.
"""
from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from .codings import negotiate, vary_with
from .datastructures import list_field
from .response import Response, StreamResponse
from .staticfiles import FileResponse

try:
    import brotli
except ImportError:  # pragma: no cover - depends on the extra
    brotli = None

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
except ImportError:
    try:
        from backports import zstd  # type: ignore[no-redef]
    except ImportError:  # pragma: no cover - depends on the extra
        zstd = None

#: Media types worth compressing besides text/* (all of which are).
COMPRESSIBLE_TYPES = frozenset({
    "application/json", "application/javascript", "application/ecmascript", "application/xml",
    "application/xhtml+xml", "application/rss+xml", "application/atom+xml", "application/ld+json",
    "application/manifest+json", "application/geo+json", "application/problem+json",
    "application/x-ndjson", "application/graphql-response+json", "application/wasm",
    "image/svg+xml", "image/x-icon", "font/ttf", "font/otf",
})

_NO_COMPRESS_STATUS = frozenset({204, 206, 304})
_VARY_LINE = b"Vary: Accept-Encoding\r\n"  # what finish adds to a small compressible answer


@dataclass(frozen=True)
class CompressionSettings:
    """What to compress and how hard.

    Levels are chosen for dynamic answers (fast, most of the gain): brotli at the top quality costs
    100x the CPU for a few percent. ``types``: media types to compress in addition to ``text/*``;
    ``+json``/``+xml`` suffixes count too. ``offload_size``: bodies this large or larger are compressed
    in a worker thread (None: never).
    """

    minimum_size: int = 500
    types: frozenset[str] = COMPRESSIBLE_TYPES
    gzip_level: int = 6
    brotli_quality: int = 4
    zstd_level: int = 3
    offload_size: int | None = 256 * 1024
    codings: tuple[str, ...] = field(default=("br", "zstd", "gzip"))

    def __post_init__(self) -> None:
        if self.minimum_size < 0:
            raise ValueError("minimum_size must be >= 0")
        if not 0 <= self.gzip_level <= 9:
            raise ValueError("gzip_level must be 0..9")
        if not 0 <= self.brotli_quality <= 11:
            raise ValueError("brotli_quality must be 0..11")
        if not -7 <= self.zstd_level <= 22:
            raise ValueError("zstd_level must be -7..22")
        unknown = set(self.codings) - {"br", "zstd", "gzip"}
        if unknown:
            raise ValueError(f"unknown codings {sorted(unknown)}; choose from br, zstd, gzip")
        object.__setattr__(self, "types", frozenset(t.lower() for t in self.types))


def available_codings() -> tuple[str, ...]:
    """The codings this installation can produce, in preference order."""
    return tuple(c for c in ("br", "zstd", "gzip")
                 if c == "gzip" or (c == "br" and brotli is not None) or (c == "zstd" and zstd is not None))


class _Encoder:
    """One coding's incremental compressor: ``feed`` returns flushed bytes, ``finish`` the trailer."""

    __slots__ = ("feed", "finish")

    def __init__(self, feed: Callable[[bytes], bytes], finish: Callable[[], bytes]) -> None:
        self.feed = feed
        self.finish = finish


class Compressor:
    """The compression finisher and its settings (see the module docstring)."""

    def __init__(self, settings: CompressionSettings | None = None) -> None:
        self.settings = settings = settings or CompressionSettings()
        usable = available_codings()
        self.codings = tuple(c for c in settings.codings if c in usable)
        self._plain_types: dict[str, bool] = {}  # content type -> compressible, for plain()

    # -- deciding ---------------------------------------------------------------------------------
    def compressible(self, content_type: str | None) -> bool:
        if not content_type:
            return False
        media = content_type.partition(";")[0].strip().lower()
        return (media.startswith("text/") or media in self.settings.types
                or media.endswith("+json") or media.endswith("+xml"))

    def plain(self, request: Any, content_type: str, size: int) -> bytes | None:
        """``finish`` for a plain 200 answer (``App.finish_plain``), without a Response: nothing, or
        only ``Vary`` for one too small to compress; None when ``finish`` would compress it."""
        route = request.route
        if route is not None and not getattr(route, "compress", True):
            return b""
        compressible = self._plain_types.get(content_type)
        if compressible is None:  # plain answers have three content types: each is judged once
            compressible = self._plain_types[content_type] = self.compressible(content_type)
        if not compressible:
            return b""
        if size < self.settings.minimum_size:
            return _VARY_LINE
        return None

    def finish(self, request: Any, response: Response) -> Response:
        """Compress ``response`` for ``request`` if both allow it; returns the response to send."""
        route = getattr(request, "route", None)
        if route is not None and not getattr(route, "compress", True):
            return response
        if response.status in _NO_COMPRESS_STATUS or response.status < 200:
            return response
        if isinstance(response, FileResponse):  # files: precompressed siblings only
            return response
        headers = response.headers
        if "content-encoding" in headers or not self.compressible(headers.get("content-type")):
            return response
        vary_with(headers, "Accept-Encoding")
        is_stream = isinstance(response, StreamResponse)
        if not is_stream and len(response.body) < self.settings.minimum_size:
            return response
        cache_control = list_field(headers, "cache-control")  # every line: no-transform may be on any
        if cache_control and "no-transform" in cache_control.lower():
            return response
        coding = negotiate(list_field(request.headers, "accept-encoding"), self.codings)
        if coding is None:
            return response
        headers["Content-Encoding"] = coding
        etag = headers.get("etag")
        if etag is not None and etag.startswith('"'):
            headers["ETag"] = "W/" + etag
        if is_stream:
            response.content_length = None  # type: ignore[attr-defined]
            if request.method != "HEAD":  # a HEAD answer's body is never read
                response.iterator = _CompressedStream(response.iterator, self.encoder(coding))  # type: ignore[attr-defined]
            return response
        body = response.body
        offload = self.settings.offload_size
        if offload is not None and len(body) >= offload:
            # The GET streams it (chunked, no length), compressed off the loop; a HEAD gets that same
            # head and its body is never produced: nothing is compressed for it, on or off the loop.
            iterator = _NoBody() if request.method == "HEAD" else self._compress_off_loop(body, coding)
            streamed = StreamResponse(iterator, response.status, list(headers.items()))
            response.body = b""
            return streamed
        # Below offload_size, on the loop: the GET sends the compressed length, and so does a HEAD
        # (the same bounded work), so that both heads say the same.
        response.body = self.compress(body, coding)
        return response

    # -- compressing ------------------------------------------------------------------------------
    def compress(self, data: bytes, coding: str) -> bytes:
        """One-shot compression of a whole body."""
        s = self.settings
        if coding == "gzip":
            c = zlib.compressobj(s.gzip_level, zlib.DEFLATED, 31)  # 31: gzip wrapper
            return c.compress(data) + c.flush()
        if coding == "br":
            return brotli.compress(data, quality=s.brotli_quality)
        if coding == "zstd":
            return zstd.compress(data, level=s.zstd_level)
        raise ValueError(f"unknown coding {coding!r}")

    def encoder(self, coding: str) -> _Encoder:
        """An incremental compressor whose every ``feed`` output is decodable up to that point."""
        s = self.settings
        if coding == "gzip":
            z = zlib.compressobj(s.gzip_level, zlib.DEFLATED, 31)
            return _Encoder(lambda d: z.compress(d) + z.flush(zlib.Z_SYNC_FLUSH), z.flush)
        if coding == "br":
            b = brotli.Compressor(quality=s.brotli_quality)
            return _Encoder(lambda d: b.process(d) + b.flush(), b.finish)
        if coding == "zstd":
            zc = zstd.ZstdCompressor(level=s.zstd_level)
            return _Encoder(lambda d: zc.compress(d, mode=zc.FLUSH_BLOCK),
                            lambda: zc.flush(mode=zc.FLUSH_FRAME))
        raise ValueError(f"unknown coding {coding!r}")

    async def _compress_off_loop(self, body: bytes, coding: str) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        yield await loop.run_in_executor(None, self.compress, body, coding)


class _NoBody:
    """The body of a HEAD answer that a GET would stream: never read (the connection sends no body)."""

    __slots__ = ()

    def __aiter__(self) -> _NoBody:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


class _CompressedStream:
    """Wraps a streamed body: each chunk compressed and flushed; ``aclose`` reaches the original.

    A class rather than an async generator so that closing it before the first chunk (a client gone
    before its turn) still closes the application's iterator.
    """

    __slots__ = ("_source", "_encoder", "_done")

    def __init__(self, source: Any, encoder: _Encoder) -> None:
        self._source = source.__aiter__()
        self._encoder = encoder
        self._done = False

    def __aiter__(self) -> _CompressedStream:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        for _ in range(1_000_000_000):  # skips empty chunks; bounded so it reads as bounded
            try:
                piece = await self._source.__anext__()
            except StopAsyncIteration:
                self._done = True
                return self._encoder.finish()
            if type(piece) is str:
                piece = piece.encode("utf-8")
            if piece:
                return self._encoder.feed(piece)
        raise RuntimeError("unreachable")

    async def aclose(self) -> None:
        self._done = True
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


__all__ = ["COMPRESSIBLE_TYPES", "CompressionSettings", "Compressor", "available_codings"]
