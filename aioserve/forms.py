"""Form bodies: ``application/x-www-form-urlencoded`` and ``multipart/form-data``.

Multipart framing is the ``multipart`` package's sans-IO ``PushMultipartParser``; this module only
feeds it from ``Request.stream()`` and turns its events into fields, files and parts. That gives
backpressure for free: the parser is fed one received chunk at a time, and the next chunk is asked of
the connection only when the handler wants more parts or bytes, so nothing is read ahead.

Every input is bounded (``FormLimits``): parts, part header bytes, field bytes and file bytes, on top
of the request's ``max_body_size``. Past a limit is 413. Anything malformed is 400: a missing or bad
boundary, junk after a boundary line (the parser's check), a preamble before the first boundary (legal
MIME, sent by no form, refused here), a truncated body, undecodable text. A body that is not a form is
415. The body is always read to its end (an epilogue after the closing boundary is ignored), so the
connection can carry the next request.

Files spool to an anonymous temporary file past ``spool_size`` (no name on disk: it disappears when
closed, or when the process dies), written in batches off the event loop, so a slow disk never stalls
other requests. ``spool_size`` also bounds the bytes of all of one form's files kept in memory
together: past it, the file being received spools too, so memory does not grow with the number of
files. A form's spooled files share one temporary file (one descriptor per form).
"""
from __future__ import annotations

import asyncio
import codecs
import io
import os
import re
import tempfile
from dataclasses import dataclass
from typing import AsyncIterator, Iterable, Protocol
from urllib.parse import parse_qsl

from multipart import MultipartError, ParserLimitReached, PushMultipartParser, parse_options_header

from .datastructures import Headers, QueryParams
from .errors import HTTPError


class Request(Protocol):
    """What the parser needs of a request (``aioserve.Request`` has it)."""

    @property
    def headers(self) -> Headers: ...

    async def body(self) -> bytes: ...

    def stream(self) -> AsyncIterator[bytes]: ...

MiB = 1024 * 1024
_MAX_BOUNDARY = 200  # RFC 2046 says 70; leave room for odd clients, never for abuse
_MAX_PART_HEADERS = 32  # header lines per part (RFC 7578 uses at most three)


@dataclass(frozen=True)
class FormLimits:
    """Bounds on a form body; each maps to a server setting (``limit_form_*``).

    ``max_file_size=None`` leaves files bounded only by the request's ``max_body_size``.
    """

    max_parts: int = 1000  # fields + files (urlencoded: name=value pairs)
    max_part_header_size: int = 8192  # bytes of one part's header section
    max_field_size: int = 1 * MiB  # bytes of one non-file value
    max_file_size: int | None = None  # bytes of one file
    spool_size: int = 1 * MiB  # a file larger than this moves from memory to a temporary file

    def __post_init__(self) -> None:
        for name in ("max_parts", "max_part_header_size", "max_field_size", "spool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_file_size is not None and self.max_file_size < 0:
            raise ValueError("max_file_size must be >= 0 or None")


DEFAULT_LIMITS = FormLimits()


# -- results ---------------------------------------------------------------------------------------
class _Spool:
    """What the uploads of one form share: a bound on the file bytes they keep in memory together,
    and one anonymous temporary file for those that spool, each a contiguous range of it (so a form
    costs one descriptor however many of its files spool)."""

    __slots__ = ("memory", "held", "file", "end", "users")

    def __init__(self, memory: int) -> None:
        self.memory = memory  # the most file bytes the form keeps in memory; past it, a file spools
        self.held = 0  # bytes of the form's files in memory now (those not spooled)
        self.file: io.BufferedRandom | None = None  # created by the first write, on a worker thread
        self.end = 0  # bytes handed to the file so far: where the next batch goes
        self.users = 0  # uploads with bytes in the file and not yet closed; the last one closes it

    def write(self, chunks: list[bytes], offset: int) -> None:
        """On a worker thread: one batch at ``offset``, flushed (readers ``os.pread`` the descriptor)."""
        if self.file is None:
            self.file = tempfile.TemporaryFile()  # no name on disk: gone when closed
        self.file.seek(offset)
        self.file.writelines(chunks)
        self.file.flush()


class UploadFile:
    """One uploaded file: ``filename``, ``content_type``, ``size``, ``headers``; ``await read()``,
    ``await save(path)``. Held in memory up to the spool size, then in an anonymous temporary file.

    The files of one ``form()`` share that bound: once they hold ``spool_size`` bytes in memory
    together, the file being received spools too, however small (into the form's one temporary file).
    """

    def __init__(self, filename: str | None, content_type: str | None, headers: list[tuple[str, str]],
                 spool_size: int = 1 * MiB) -> None:
        self.filename = filename
        self.content_type = content_type
        self.headers = headers  # the part's headers, (Title-Case name, value) pairs
        self.size = 0
        self._spool_size = spool_size
        self._chunks: list[bytes] = []  # all of it while small; afterwards, what waits for the disk
        self._buffered = 0
        self._spooled = False
        self._spool: _Spool | None = None  # the form's (set by _read_multipart_form), else its own
        self._start = 0  # where its bytes begin in the spool's file, once spooled
        self._holding = False  # counted among the spool file's users
        self._writing: asyncio.Future[None] | None = None  # at most one batch on its way to the disk
        self._position = 0
        self._closed = False

    @property
    def in_memory(self) -> bool:
        return not self._spooled

    @property
    def _file(self) -> io.BufferedRandom | None:
        """The temporary file its bytes are in, once spooled (shared with the form's other spooled files)."""
        return self._spool.file if self._spooled and self._spool is not None else None

    async def _write(self, data: bytes) -> None:
        size = len(data)
        self.size += size
        self._chunks.append(data)
        self._buffered += size
        if self._spooled:
            if self._buffered > self._spool_size:
                await self._flush(wait=False)
            return
        spool = self._spool
        if spool is None:
            spool = self._spool = _Spool(self._spool_size)
        spool.held += size
        if self._buffered > self._spool_size or spool.held > spool.memory:
            spool.held -= self._buffered  # on its way to the disk
            await self._flush(wait=False)

    async def _flush(self, wait: bool = True) -> None:
        """Hand what is buffered to a worker thread, one batch (about ``spool_size``) at a time.

        Double-buffered: parsing the next batch overlaps the disk write of this one, and at most two
        batches are in memory. Batches go one after another (each waits for the one before), and a
        form's files one after another, so each file's bytes are one range of the spool's file."""
        if self._writing is not None:
            await self._writing
            self._writing = None
        if self._chunks:
            chunks, self._chunks, self._buffered = self._chunks, [], 0
            spool = self._spool
            if spool is None:
                spool = self._spool = _Spool(self._spool_size)
            if not self._spooled:
                self._spooled = True
                self._start = spool.end
                self._holding = True
                spool.users += 1
            offset = spool.end
            spool.end += sum(map(len, chunks))
            self._writing = asyncio.get_running_loop().run_in_executor(None, spool.write, chunks, offset)
        if wait and self._writing is not None:
            await self._writing
            self._writing = None

    async def _finish(self) -> None:
        """The part has ended: everything on disk (if spooled), or joined in memory."""
        if self._spooled:
            await self._flush()
        elif len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]

    async def read(self, size: int = -1) -> bytes:
        """Read from the current position (the start, at first); ``size=-1`` reads to the end."""
        self._check_open()
        file = self._file
        if file is None:
            data = b"".join(self._chunks)
            end = len(data) if size < 0 else min(len(data), self._position + size)
            chunk = data[self._position:end]
            self._position = end
            return chunk
        left = self.size - self._position
        count = left if size < 0 else min(size, left)
        if count <= 0:
            return b""
        data = await asyncio.to_thread(_pread, file.fileno(), count, self._start + self._position)
        self._position += len(data)
        return data

    async def seek(self, offset: int) -> None:
        self._check_open()
        self._position = max(0, offset)

    async def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole file to ``path`` (created or truncated), off the event loop."""
        self._check_open()
        file = self._file
        if file is None:
            await asyncio.to_thread(_write_bytes, path, b"".join(self._chunks))
            return
        await asyncio.to_thread(_copy_range, file.fileno(), self._start, self.size, path)

    def close(self) -> None:
        """Release the memory or delete the temporary file (after a write in progress). Idempotent.

        A temporary file shared by a form's files is deleted when the last of them is closed."""
        self._closed = True
        self._chunks = []
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.add_done_callback(self._close_after_write)
        elif self._release():
            self._spool.file.close()  # type: ignore[union-attr]

    async def aclose(self) -> None:
        """``close()``, with the temporary file's deletion (freeing its blocks) off the event loop."""
        writing = self._writing
        if self._holding and (writing is None or writing.done()):
            self._closed = True
            self._chunks = []
            self._writing = None
            if writing is not None and not writing.cancelled():
                writing.exception()  # retrieved: a failed write of a discarded upload is not news
            if self._release():
                await asyncio.to_thread(self._spool.file.close)  # type: ignore[union-attr]
            return
        self.close()

    def _release(self) -> bool:
        """Stop using the spool's file: True when this was its last user (the file is to be closed)."""
        if not self._holding:
            return False
        self._holding = False
        spool = self._spool
        spool.users -= 1  # type: ignore[union-attr]
        return spool.users == 0 and spool.file is not None and not spool.file.closed  # type: ignore[union-attr]

    def _close_after_write(self, writing: asyncio.Future[None]) -> None:
        if not writing.cancelled():
            writing.exception()  # retrieved: a failed write of a discarded upload is not news
        if self._release():
            self._spool.file.close()  # type: ignore[union-attr]

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"upload {self.filename!r} is closed (its request has ended)")

    def __repr__(self) -> str:
        return f"UploadFile(filename={self.filename!r}, content_type={self.content_type!r}, size={self.size})"


def _write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)


def _pread(fd: int, count: int, offset: int) -> bytes:
    """``count`` bytes at ``offset`` (fewer only at the end of the file), without moving a position
    that another upload of the same form may be using."""
    parts = []
    for _ in range(count // MiB + 2):  # reads of a regular file are whole; bounded all the same
        if count <= 0:
            break
        data = os.pread(fd, min(count, 1 << 30), offset)
        if not data:
            break
        parts.append(data)
        count -= len(data)
        offset += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _copy_range(fd: int, start: int, size: int, path: str | os.PathLike[str]) -> None:
    with open(path, "wb") as out:
        end = start + size
        for offset in range(start, end, MiB):
            data = os.pread(fd, min(MiB, end - offset), offset)
            if not data:
                break
            out.write(data)


class FormFiles(QueryParams):
    """The uploaded files by field name: ``files[name]``/``get`` (first), ``getall`` (every one)."""

    __slots__ = ()


class FormData(QueryParams):
    """A parsed form: ``form[name]``/``get`` give the first value (a ``str``), ``getall`` every one;
    blank values are kept. Files are only in ``form.files``. Close it (``close()``/``aclose()``, or
    ``async with``) to delete spooled files; the server does so when the request ends."""

    __slots__ = ("files",)

    def __init__(self, fields: Iterable[tuple[str, str]] = (), files: Iterable[tuple[str, UploadFile]] = ()) -> None:
        super().__init__(list(fields))
        self.files = FormFiles(list(files))  # type: ignore[arg-type]

    def close(self) -> None:
        for _, upload in self.files.multi_items():
            upload.close()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        """``close()``, deleting temporary files off the event loop (a large one takes milliseconds)."""
        for _, upload in self.files.multi_items():
            await upload.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> FormData:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# -- content types ---------------------------------------------------------------------------------
def _content_type(request: Request) -> tuple[str, dict[str, str]]:
    value = request.headers.get("content-type")
    if not value:
        return "", {}
    try:
        kind, options = parse_options_header(value)
    except Exception:  # a header the parser cannot split is not a form we understand
        raise HTTPError(400, "Malformed Content-Type header") from None
    return kind.lower(), options


def _boundary(options: dict[str, str]) -> str:
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > _MAX_BOUNDARY or any(c in boundary for c in "\r\n\x00"):
        raise HTTPError(400, "multipart/form-data without a valid boundary")
    return boundary


def _charset(name: str | None) -> str:
    """A charset the codecs module knows, or 400."""
    if not name:
        return "utf-8"
    try:
        return codecs.lookup(name.strip().strip('"')).name
    except LookupError:
        raise HTTPError(400, f"Unknown charset {name!r}") from None


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        raise HTTPError(400, f"Form data is not valid {charset}") from None


# -- form() ----------------------------------------------------------------------------------------
async def read_form(request: Request, limits: FormLimits = DEFAULT_LIMITS) -> FormData:
    """``await request.form()``: urlencoded or multipart, else 415."""
    kind, options = _content_type(request)
    if kind == "application/x-www-form-urlencoded":
        return _parse_urlencoded(await request.body(), limits)
    if kind == "multipart/form-data":
        return await _read_multipart_form(request, _boundary(options), limits)
    raise HTTPError(415, "Expected application/x-www-form-urlencoded or multipart/form-data")


_FIELD = re.compile(rb"[^&]+")  # a name=value pair; empty ones (``a=1&&b=2``, a trailing ``&``) are none


def _parse_urlencoded(body: bytes, limits: FormLimits) -> FormData:
    limit = limits.max_parts
    if body.count(b"&") >= limit:  # counted before any parsing: perhaps too many pairs
        pairs_seen: list[bytes] = []  # at most ``limit``; a flood of "&" has no match (one scan in C)
        for match in _FIELD.finditer(body):
            if len(pairs_seen) == limit:
                raise HTTPError(413, f"Form has more than {limit} fields")
            pairs_seen.append(match.group())
        body = b"&".join(pairs_seen)  # the same pairs without the empty ones: fewer than ``limit`` "&"
    # latin-1 maps bytes to code points one to one, so the percent-decoded bytes survive until the
    # charset (the ``_charset_`` field's, or UTF-8) is known.
    pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1", separator="&")
    charset = "utf-8"
    for name, value in pairs:
        if name == "_charset_":
            charset = _charset(value)
            break
    fields = []
    for name, value in pairs:
        if len(value) > limits.max_field_size or len(name) > limits.max_field_size:
            raise HTTPError(413, f"Form field is larger than {limits.max_field_size} bytes")
        fields.append((_decode(name.encode("latin-1"), charset), _decode(value.encode("latin-1"), charset)))
    return FormData(fields)


async def _read_multipart_form(request: Request, boundary: str, limits: FormLimits) -> FormData:
    raw_fields: list[tuple[str, bytes, str | None]] = []  # decoded once the _charset_ field is known
    files: list[tuple[str, UploadFile]] = []
    spool = _Spool(limits.spool_size)  # the files' memory, bounded as a whole, and their one temporary file
    charset = "utf-8"
    try:
        async for part in MultipartReader(request.stream(), boundary, limits):
            if part.filename is None:
                value = b"".join([chunk async for chunk in part])
                if part.name == "_charset_":
                    charset = _charset(value.decode("latin-1"))
                raw_fields.append((part.name, value, part.charset))
            else:
                upload = UploadFile(part.filename, part.content_type, part.headers, limits.spool_size)
                upload._spool = spool
                files.append((part.name, upload))
                async for chunk in part:
                    await upload._write(chunk)
                await upload._finish()
    except BaseException:
        for _, upload in files:
            upload.close()
        raise
    fields = [(name, _decode(value, _charset(own) if own else charset)) for name, value, own in raw_fields]
    return FormData(fields, files)


# -- multipart(): streaming ------------------------------------------------------------------------
class Part:
    """One part of a streamed multipart body: ``name``, ``filename``, ``content_type``, ``charset``,
    ``headers``; ``async for chunk in part`` yields its bytes as they arrive (once)."""

    def __init__(self, reader: MultipartReader, name: str, filename: str | None,
                 content_type: str | None, charset: str | None, headers: list[tuple[str, str]]) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.charset = charset
        self.headers = headers
        self._reader = reader
        self._done = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self._done:
            chunk = await self._reader._payload(self)
            if chunk is None:
                return
            yield chunk

    async def read(self) -> bytes:
        """The rest of this part (bounded by the field or file limit)."""
        return b"".join([chunk async for chunk in self])

    def __repr__(self) -> str:
        return f"Part(name={self.name!r}, filename={self.filename!r})"


class MultipartReader:
    """Drives ``PushMultipartParser`` from a body stream, one event at a time (pull, never push)."""

    def __init__(self, stream: AsyncIterator[bytes], boundary: str, limits: FormLimits = DEFAULT_LIMITS) -> None:
        self._stream = stream.__aiter__()
        self._limits = limits
        self._dash_boundary = b"--" + boundary.encode("latin-1")
        try:
            self._parser = PushMultipartParser(
                boundary, max_header_size=limits.max_part_header_size, max_header_count=_MAX_PART_HEADERS,
                max_segment_count=limits.max_parts,
            )
        except MultipartError:
            raise HTTPError(400, "multipart/form-data without a valid boundary") from None
        self._events_iter: object = None
        self._head = b""  # the first bytes, until they show the body opens with the boundary
        self._ended = False  # the stream is exhausted
        self._current: Part | None = None
        self._part_limit = 0
        self._part_size = 0

    def __aiter__(self) -> AsyncIterator[Part]:
        return self._parts()

    async def _parts(self) -> AsyncIterator[Part]:
        while True:
            current = self._current
            if current is not None and not current._done:  # the handler skipped the rest: drain it
                while await self._payload(current) is not None:
                    pass
            event = await self._next_event()
            if event is None:
                return
            part = self._start_part(event)
            self._current = part
            yield part

    def _start_part(self, segment: object) -> Part:
        headers = list(segment.headerlist)  # type: ignore[attr-defined]
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self._limits.max_part_header_size:
            raise HTTPError(413, f"A part's headers are larger than {self._limits.max_part_header_size} bytes")
        filename = segment.filename  # type: ignore[attr-defined]
        if filename is None:
            self._part_limit = self._limits.max_field_size
        else:
            limit = self._limits.max_file_size
            self._part_limit = -1 if limit is None else limit
        self._part_size = 0
        return Part(self, segment.name or "", filename, segment.content_type,  # type: ignore[attr-defined]
                    segment.charset, headers)  # type: ignore[attr-defined]

    async def _payload(self, part: Part) -> bytes | None:
        """The next chunk of ``part``, or None at its end."""
        if part is not self._current or part._done:
            return None
        event = await self._next_event()
        if event is None or not isinstance(event, (bytes, bytearray)):
            part._done = True  # the part-end event (None); a segment cannot come before it
            return None
        self._part_size += len(event)
        if -1 < self._part_limit < self._part_size:
            what = "file" if part.filename is not None else "field"
            raise HTTPError(413, f"A form {what} is larger than {self._part_limit} bytes")
        return bytes(event)

    async def _next_event(self) -> object:
        """The parser's next event: a segment, a bytes chunk, or None (end of a part, or of the body)."""
        while True:
            if self._events_iter is not None:
                try:
                    return next(self._events_iter)  # type: ignore[call-overload]
                except StopIteration:
                    self._events_iter = None
                except ParserLimitReached as exc:
                    raise HTTPError(413, f"Multipart body past a limit: {exc}") from None
                except MultipartError as exc:
                    raise HTTPError(400, f"Malformed multipart body: {exc}") from None
            chunk = await self._read()
            if chunk is None:
                try:
                    self._parser.close()
                except MultipartError:
                    raise HTTPError(400, "Truncated multipart body") from None
                return None
            self._events_iter = iter(self._parser.parse(chunk))

    async def _read(self) -> bytes | None:
        """The next non-empty chunk of the body, or None at its end; checks the body opens with the
        boundary (a preamble is legal in MIME, but no form sends one, and skipping it costs work)."""
        if self._ended:
            return None
        async for chunk in self._stream:
            if not chunk:
                continue
            if self._head is not None:
                head = self._head + chunk
                want = len(self._dash_boundary) + 2
                if len(head) < want:
                    self._head = head
                    continue
                if not (head.startswith(self._dash_boundary) or head.startswith(b"\r\n" + self._dash_boundary)):
                    raise HTTPError(400, "Malformed multipart body: it does not start with the boundary")
                self._head = None  # type: ignore[assignment]
                return head
            return chunk
        self._ended = True
        if self._head:  # shorter than one boundary
            raise HTTPError(400, "Truncated multipart body")
        return None


def iter_parts(request: Request, limits: FormLimits = DEFAULT_LIMITS) -> MultipartReader:
    """``request.multipart()``: the parts of a multipart/form-data body as they arrive, else 415."""
    kind, options = _content_type(request)
    if kind != "multipart/form-data":
        raise HTTPError(415, "Expected multipart/form-data")
    return MultipartReader(request.stream(), _boundary(options), limits)


__all__ = ["DEFAULT_LIMITS", "FormData", "FormFiles", "FormLimits", "MultipartReader", "Part", "UploadFile",
           "iter_parts", "read_form"]
