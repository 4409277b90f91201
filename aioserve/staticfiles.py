"""Files from disk: ``FileResponse`` for handlers, ``app.static(prefix, directory)`` for a tree.

A file is never read into memory whole. ``FileResponse`` is a ``StreamResponse`` with an exact
``content_length`` and a ``plan``: the body as a list of pieces, ``bytes`` (multipart boundaries) or
``(offset, count)`` slices of ``fd``. The connection sends it through its streaming path, which
sends it with sendfile over a plain socket (``sendfile.py``), and otherwise (TLS) reads the plan in
64 KiB ``os.pread`` calls off the event loop (flow-controlled; a disconnect stops it and the file is
closed); a body of at most 64 KiB is read at once on the loop (``read_small``) and answered inline.

``StaticFiles`` maps a request path to a file without ever leaving its directory. It works on the
raw (still percent-encoded) path, one segment at a time, so that an encoded slash, backslash or NUL
cannot become a separator after decoding; it refuses ``.``/``..`` segments outright rather than
normalising them; and it opens each component relative to the previous one with ``O_NOFOLLOW``
(unless symlinks are allowed, in which case the fully resolved path must still lie inside the
directory). The opened file is ``fstat``-ed, so the validators describe exactly the bytes sent.
Lookups are plain system calls on the loop: stat and open of a cached directory entry cost
microseconds, less than a trip to a thread would.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import mimetypes
import os
import stat as stat_module
import time
from email.utils import formatdate
from typing import Any, Union
from urllib.parse import quote, unquote_to_bytes

from .codings import negotiate, vary_with
from .datastructures import HeadersInit, list_field
from .errors import HTTPError
from .ranges import IGNORE, evaluate_conditions, if_range_allows, parse_range
from .response import Response, StreamResponse

READ_SIZE = 64 * 1024  # one pread off the loop; also the most a paused transport holds beyond its limit
# A body of at most this many file bytes is read on the loop: a pread of a small file costs less than
# the trip to a thread (as sendfile, which is a call on the loop too, and the open and stat before it).
INLINE_READ = 64 * 1024
Piece = Union[bytes, "tuple[int, int]"]
ALONE_CACHE = 4096  # file names remembered as having no precompressed sibling (cleared when full)
SETTLE_NS = 2_000_000_000  # a directory's mtime is trusted once this old
# The deepest file served, in path segments below the directory: a deeper request path is 404 before any
# decoding or system call (each segment costs a decode and an open, or with follow_symlinks an lstat;
# an 8 KiB target of 4,000 segments cost 5 to 16 ms).
MAX_DEPTH = 64

#: Precompressed siblings: suffix -> Content-Encoding, in the server's order of preference.
SIBLINGS = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}

_TEXT_LIKE = ("application/javascript", "application/json", "application/xml", "image/svg+xml",
              "application/manifest+json", "text/javascript")
_ARCHIVE_TYPES = {"gzip": "application/gzip", "br": "application/x-brotli", "zstd": "application/zstd",
                  "bzip2": "application/x-bzip2", "xz": "application/x-xz"}
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Every file is opened non-blocking: opening a FIFO for reading otherwise waits for a writer, and it
# would wait on the event loop, stopping the whole server (the type is checked only once it is open).
# On a regular file the flag changes nothing: reads, pread and sendfile of a file never wait for data.
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@functools.lru_cache(maxsize=1024)
def guess_type(name: str) -> str:
    """The Content-Type for a file name: ``mimetypes``, with ``charset=utf-8`` for text.

    Cached (bounded): a site serves the same few names over and over.
    """
    ctype, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:  # "x.tar.gz" fetched as such is a gzip file, not a tar with an encoding
        return _ARCHIVE_TYPES.get(encoding, "application/octet-stream")
    if ctype is None:
        return "application/octet-stream"
    if ctype.startswith("text/") or ctype in _TEXT_LIKE:
        return f"{ctype}; charset=utf-8"
    return ctype


def make_etag(st: os.stat_result) -> str:
    """A strong validator from size, mtime (ns) and inode: any change to the file changes it.

    Hashed so that the inode number is not published.
    """
    raw = b"%x-%x-%x-%x" % (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    return '"%s"' % hashlib.blake2b(raw, digest_size=10).hexdigest()


class _Descriptor:
    """An open file descriptor shared by a response and its body, closed once.

    Its own object so that neither holds the other (no reference cycle): a response dropped unsent
    (a middleware replaced it, the handler raised after making it) releases the descriptor at once.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


class _FileBody:
    """The async iterator that reads a plan's slices off the loop; ``aclose`` closes the file.

    The connection calls ``aclose`` whether or not it iterated (a HEAD, a disconnect), so the file
    descriptor is released as soon as the answer is over.
    """

    __slots__ = ("_file", "_path", "_pieces", "_offset", "_left", "_closed", "_inline")

    def __init__(self, file: _Descriptor, path: str, plan: list[Piece]) -> None:
        self._file = file
        self._path = path
        self._pieces = iter(plan)
        self._offset = 0
        self._left = 0
        self._closed = False
        self._inline = sum(p[1] for p in plan if type(p) is not bytes) <= INLINE_READ  # type: ignore[misc]

    def __aiter__(self) -> _FileBody:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        while self._left == 0:
            piece = next(self._pieces, None)
            if piece is None:
                await self.aclose()
                raise StopAsyncIteration
            if type(piece) is bytes:
                return piece
            self._offset, self._left = piece  # type: ignore[misc]
        fd = self._file.fd
        if fd is None:
            raise RuntimeError("the file was closed before its body was sent")
        size = min(READ_SIZE, self._left)
        if self._inline:
            data = os.pread(fd, size, self._offset)
        else:
            data = await asyncio.get_running_loop().run_in_executor(None, os.pread, fd, size, self._offset)
        if not data:  # the file shrank after it was measured: the body cannot be completed
            await self.aclose()
            raise OSError(f"{self._path}: file shorter than its Content-Length")
        self._offset += len(data)
        self._left -= len(data)
        return data

    async def aclose(self) -> None:
        self._closed = True
        self._file.close()


class FileResponse(StreamResponse):
    """``FileResponse(path, status=200, headers=None, content_type=None, filename=None)``.

    Opens and measures the file at once (a missing file raises ``HTTPError(404)``); the body is read
    later, in bounded pieces. ``filename`` adds ``Content-Disposition: attachment``. Call
    ``respond_to(request)`` to apply the request's validators and Range (``app.static`` does).
    """

    __slots__ = ("path", "_file", "stat", "plan", "etag", "last_modified", "media_type")

    def __init__(
        self,
        path: str | os.PathLike[str],
        status: int = 200,
        headers: HeadersInit = None,
        content_type: str | None = None,
        filename: str | None = None,
        *,
        fd: int | None = None,
        encoding: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if fd is None:
            try:
                fd = os.open(self.path, os.O_RDONLY | _O_CLOEXEC | _O_NONBLOCK)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
                raise HTTPError(404) from exc
        self._file = _Descriptor(fd)
        try:
            st = self.stat = os.fstat(fd)
            if not stat_module.S_ISREG(st.st_mode):
                raise HTTPError(404)
        except BaseException:
            self.close()
            raise
        self.media_type = content_type or guess_type(self.path)
        super().__init__(_NOT_YET, status, headers, self.media_type, content_length=st.st_size)
        self.plan: list[Piece] = [(0, st.st_size)] if st.st_size else []
        self.iterator = _FileBody(self._file, self.path, self.plan)
        self.etag = make_etag(st)
        self.last_modified = formatdate(st.st_mtime, usegmt=True)
        h = self.headers
        h.setdefault("ETag", self.etag)
        h.setdefault("Last-Modified", self.last_modified)
        h.setdefault("Accept-Ranges", "bytes")
        if encoding is not None:
            h["Content-Encoding"] = encoding
        if filename is not None:
            h.setdefault("Content-Disposition", _disposition(filename))

    @property
    def fd(self) -> int | None:
        """The open file (for ``os.sendfile``/``loop.sendfile``); None once the answer is over."""
        return self._file.fd

    def close(self) -> None:
        """Release the file descriptor (idempotent)."""
        self._file.close()

    def read_small(self) -> bytes:
        """The whole body, read now, and the file closed: for a body of at most ``INLINE_READ`` bytes,
        which the connection answers as a plain response (one pread costs less than a task)."""
        try:
            fd = self._file.fd
            if fd is None:
                raise RuntimeError("the file was closed before its body was sent")
            out = []
            for piece in self.plan:
                if type(piece) is bytes:
                    out.append(piece)
                    continue
                offset, count = piece  # type: ignore[misc]
                data = os.pread(fd, count, offset)
                if len(data) != count:  # the file shrank after it was measured
                    raise OSError(f"{self.path}: file shorter than its Content-Length")
                out.append(data)
            return out[0] if len(out) == 1 else b"".join(out)
        finally:
            self._file.close()

    def reader(self, plan: list[Piece]) -> _FileBody:
        """An iterator that reads ``plan`` in bounded pieces; closing it closes the file.

        The connection uses it for what ``loop.sendfile`` could not send.
        """
        return _FileBody(self._file, self.path, plan)

    def respond_to(self, request: Any) -> Response:
        """This response as the request asks for it: itself, a 206 of some ranges, a 304, 412 or 416.

        Only a 200 to a GET or HEAD takes part; anything else is returned as is. The validators apply
        to both; Range only to a GET (RFC 9110 14.2: range handling is defined for GET alone, so a HEAD
        gets the 200 head, the whole length included).
        """
        method = request.method
        if self.status != 200 or (method != "GET" and method != "HEAD"):
            return self
        headers = request.headers
        mtime = int(self.stat.st_mtime)
        verdict = evaluate_conditions(headers, self.etag, mtime)
        if verdict != 200:
            return self._instead(verdict)
        if method != "GET":
            return self
        range_header = headers.get("range")
        if range_header is None or not if_range_allows(headers.get("if-range"), self.etag, self.last_modified,
                                                       self.stat.st_mtime):
            return self
        size = self.stat.st_size
        spans = parse_range(range_header, size)
        if spans is IGNORE:
            return self
        if not spans:
            answer = self._instead(416)
            answer.headers["Content-Range"] = f"bytes */{size}"
            return answer
        self.status = 206
        h = self.headers
        if len(spans) == 1:
            start, end = spans[0]
            self.plan = [(start, end - start + 1)]
            h["Content-Range"] = f"bytes {start}-{end}/{size}"
        else:
            boundary = hashlib.blake2b(os.urandom(16), digest_size=12).hexdigest()
            self.plan = _multipart_plan(spans, size, self.media_type, boundary)
            h["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        self.content_length = sum(len(p) if type(p) is bytes else p[1] for p in self.plan)  # type: ignore[misc]
        self.iterator = _FileBody(self._file, self.path, self.plan)
        return self

    def _instead(self, status: int) -> Response:
        """A bodiless answer that keeps the validators and caching headers, and closes the file."""
        self.close()
        kept = [(n, v) for n, v in self.headers.items()
                if n.lower() in ("etag", "last-modified", "cache-control", "vary", "expires", "content-location")]
        if status != 304:
            kept = [(n, v) for n, v in kept if n.lower() in ("etag", "cache-control", "vary")]
            body = {412: "Precondition Failed", 416: "Range Not Satisfiable"}.get(status, "")
            return Response(body, status, kept, "text/plain; charset=utf-8")
        return Response(b"", status, kept)


class _NotYet:
    """A placeholder iterator, replaced in ``FileResponse.__init__`` once the file is open."""

    def __aiter__(self) -> _NotYet:
        return self


_NOT_YET = _NotYet()


def _multipart_plan(spans: list[tuple[int, int]], size: int, media_type: str, boundary: str) -> list[Piece]:
    plan: list[Piece] = []
    for i, (start, end) in enumerate(spans):
        head = (f"{'' if i == 0 else chr(13) + chr(10)}--{boundary}\r\nContent-Type: {media_type}\r\n"
                f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n")
        plan.append(head.encode("latin-1"))
        plan.append((start, end - start + 1))
    plan.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    return plan


def _disposition(filename: str) -> str:
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    if ascii_name == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


class StaticFiles:
    """Serves the files under ``directory`` at ``prefix`` (see ``App.static``)."""

    def __init__(self, prefix: str, directory: str | os.PathLike[str], *, html: bool = False,
                 follow_symlinks: bool = False, cache_control: str | None = None) -> None:
        root = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(root):
            raise ValueError(f"static directory {directory!r} does not exist or is not a directory")
        self.root = root
        self.prefix = prefix.rstrip("/")
        self.raw_prefix = self.prefix.encode("latin-1")
        self.prefix_depth = self.raw_prefix.count(b"/")
        self.html = html
        self.follow_symlinks = follow_symlinks
        self.cache_control = cache_control
        # (directory, name) -> the directory's mtime when ``name`` had no precompressed sibling
        self._alone: dict[tuple[int, int, str], int] = {}

    def install(self, app: Any) -> None:
        """Register ``prefix`` (a redirect to ``prefix/`` with ``html``) and ``prefix/{path:path}``."""
        app.add_route(f"{self.prefix}/{{path:path}}", self.serve, ("GET",), name=f"static:{self.prefix or '/'}")
        if self.prefix:
            app.add_route(self.prefix, self.serve_root, ("GET",), name=f"static-root:{self.prefix}")

    async def serve_root(self, request: Any) -> Response:
        if not self.html:
            raise HTTPError(404)
        return _redirect_to_slash(request)

    async def serve(self, request: Any, path: str = "") -> Response:
        raw = request.raw_path
        if not raw.startswith(self.raw_prefix + b"/") or raw.count(b"/") > MAX_DEPTH + self.prefix_depth:
            raise HTTPError(404)
        segments = _segments(raw[len(self.raw_prefix) + 1:])
        if segments is None:
            raise HTTPError(404)
        parent = self._parent(segments)
        try:
            fd, is_dir = self._open(segments, parent)
            if is_dir:
                os.close(fd)
                if not self.html:
                    raise HTTPError(404)
                if segments and segments[-1] != "":
                    return _redirect_to_slash(request)
                segments = [*segments[:-1], "index.html"] if segments else ["index.html"]
                fd, is_dir = self._open(segments)
                if is_dir:
                    os.close(fd)
                    raise HTTPError(404)
                if parent is not None:  # the index is in another directory than the one open
                    os.close(parent)
                    parent = None
            name = segments[-1]
            response = self._with_sibling(request, segments, fd, name, parent)
        finally:
            if parent is not None:
                os.close(parent)
        if self.cache_control is not None:
            response.headers["Cache-Control"] = self.cache_control
        return response.respond_to(request)

    def _with_sibling(self, request: Any, segments: list[str], fd: int, name: str, parent: int | None) -> FileResponse:
        """The plain file, or a precompressed ``.br``/``.zst``/``.gz`` beside it that the client accepts."""
        media_type = guess_type(name)
        available: dict[str, int] = {}
        key, settled = self._sibling_key(parent, name)
        if settled is None or self._alone.get(key) != settled:  # type: ignore[arg-type]
            for coding, suffix in SIBLINGS.items():
                sibling_fd = self._open_sibling(segments, name + suffix, parent)
                if sibling_fd is not None:
                    available[coding] = sibling_fd
            if not available and settled is not None:
                if len(self._alone) >= ALONE_CACHE:
                    self._alone.clear()
                self._alone[key] = settled
        if not available:
            return FileResponse(os.path.join(self.root, *segments), fd=fd, content_type=media_type)
        chosen = negotiate(list_field(request.headers, "accept-encoding"), available)
        for coding, sibling_fd in available.items():
            if coding != chosen:
                os.close(sibling_fd)
        if chosen is None:
            response = FileResponse(os.path.join(self.root, *segments), fd=fd, content_type=media_type)
        else:
            os.close(fd)
            path = os.path.join(self.root, *segments[:-1], name + SIBLINGS[chosen])
            response = FileResponse(path, fd=available[chosen], content_type=media_type, encoding=chosen)
        vary_with(response.headers, "Accept-Encoding")
        return response

    def _sibling_key(self, parent: int | None, name: str) -> tuple[tuple[int, int, str] | None, int | None]:
        """(the cache key of ``name`` in ``parent``, the directory's mtime if it is settled, else None).

        Adding or removing a sibling changes its directory's mtime, so an entry holds while the mtime
        does. A directory modified in the last ``SETTLE_NS`` is not trusted (its mtime has a coarse
        clock's granularity, so a second change in the same tick could keep it): git's racy-clean rule.
        """
        if parent is None:
            return None, None
        st = os.fstat(parent)
        mtime = st.st_mtime_ns
        return (st.st_dev, st.st_ino, name), (mtime if time.time_ns() - mtime > SETTLE_NS else None)

    def _parent(self, segments: list[str]) -> int | None:
        """The directory of the file ``segments`` names, opened once for the file and its siblings
        (without following symlinks); None when symlinks are followed or the path names a directory."""
        if self.follow_symlinks or not segments or segments[-1] == "":
            return None
        try:
            fd = os.open(self.root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
            for name in segments[:-1]:
                try:
                    next_fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_DIRECTORY, dir_fd=fd)
                finally:
                    os.close(fd)
                fd = next_fd
        except OSError as exc:  # ENOENT, ENOTDIR, ELOOP (a symlink), EACCES...
            raise HTTPError(404) from exc
        return fd

    def _open_sibling(self, segments: list[str], name: str, parent: int | None) -> int | None:
        """The regular file ``name`` beside ``segments``' file, open, or None (no exception: most are absent)."""
        if parent is None:
            try:
                fd, is_dir = self._open([*segments[:-1], name])
            except HTTPError:
                return None
            if is_dir:
                os.close(fd)
                return None
            return fd
        try:
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, dir_fd=parent)
        except OSError:
            return None
        try:
            regular = stat_module.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            regular = False
        if not regular:
            os.close(fd)
            return None
        return fd

    def _open(self, segments: list[str], parent: int | None = None) -> tuple[int, bool]:
        """Open the file (or directory) ``segments`` names under the root -> (fd, is_directory).

        ``parent``, when given, is ``segments[:-1]`` already open (``_parent``). Raises
        ``HTTPError(404)`` for anything missing, unreadable, or reached through a symlink that is
        not allowed.
        """
        names = [s for s in segments if s]  # only the last may be empty ("dir/")
        try:
            if parent is not None:
                fd = os.open(names[-1], os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, dir_fd=parent)
            elif self.follow_symlinks:
                target = os.path.realpath(os.path.join(self.root, *names))
                if target != self.root and not target.startswith(self.root + os.sep):
                    raise HTTPError(404)
                fd = os.open(target, os.O_RDONLY | _O_CLOEXEC | _O_NONBLOCK)
            else:
                fd = os.open(self.root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
                for i, name in enumerate(names):
                    flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | (_O_DIRECTORY if i < len(names) - 1 else _O_NONBLOCK)
                    try:
                        next_fd = os.open(name, flags, dir_fd=fd)
                    finally:
                        os.close(fd)
                    fd = next_fd
        except OSError as exc:  # ENOENT, ENOTDIR, ELOOP (a symlink), EACCES...
            raise HTTPError(404) from exc
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise HTTPError(404) from exc
        if stat_module.S_ISDIR(mode):
            return fd, True
        if not stat_module.S_ISREG(mode) or segments[-1:] == [""]:  # a FIFO, a device, "file.txt/": never
            os.close(fd)
            raise HTTPError(404)
        return fd, False


def _segments(raw: bytes) -> list[str] | None:
    """Decoded path segments under the prefix, or None when any is hostile or malformed.

    Each segment is percent-decoded on its own, so ``%2F`` stays inside its segment, where it and
    every other separator, ``.``, ``..``, NUL and control characters are refused.
    """
    parts = raw.split(b"/")
    segments: list[str] = []
    for i, part in enumerate(parts):
        try:
            name = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if name == "":
            if i != len(parts) - 1:  # "a//b": no empty segments but a trailing one ("dir/")
                return None
        elif name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
            return None
        segments.append(name)
    return segments


def _redirect_to_slash(request: Any) -> Response:
    location = request.raw_path.decode("latin-1") + "/"
    if request.query_string:
        location += "?" + request.query_string.decode("latin-1")
    return Response(b"", 307, {"Location": location})


__all__ = ["FileResponse", "StaticFiles", "guess_type", "make_etag"]
