"""The request model: what a handler sees of one request.

One ``Request`` per request, built when its head is parsed and routed. It decodes lazily: headers,
query and cookies are parsed the first time a handler asks. The body arrives through the request's
``Channel``, the connection's per-request exchange (``exchange.py``): ``body()``, ``json()`` and
``stream()`` read it, and reading is what triggers ``100 Continue`` and un-pauses a transport paused
for backpressure. Nothing outside this module sets a ``Request``'s private fields.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Protocol

import orjson

from .datastructures import Headers, QueryParams, RawHeaders, parse_cookies
from .errors import HTTPError
from .forms import DEFAULT_LIMITS, FormData, FormLimits, Part, iter_parts, read_form


class Channel(Protocol):
    """What a request asks of the connection that carries it (implemented by ``exchange.Exchange``)."""

    deadline: float | None  # when the request's time budget runs out (loop time), or None

    @property
    def disconnected(self) -> bool: ...

    @property
    def peer_closed(self) -> bool: ...

    def peer(self) -> tuple[str, int] | None: ...

    async def read_body(self) -> bytes: ...

    async def read_chunks(self) -> list[bytes]: ...

    async def wait_disconnected(self) -> None: ...

    @property
    def form_limits(self) -> FormLimits: ...

    def answer_now(self, result: Any) -> asyncio.Task[None] | None: ...


_CONSUMED = ("the request body was already read by request.stream(), which keeps nothing: read it once, "
             "either with stream() or with body() (after which stream() replays it)")


class Request:
    # What every request sets lives in slots. Everything else starts as a class-level default and
    # lands in the instance ``__dict__`` only when a request sets it (parsed headers, a cached
    # body...), so building a request costs a dozen stores.
    __slots__ = (
        "method", "raw_path", "query_string", "path", "http_version", "keep_alive", "scheme", "route",
        "raw_headers", "path_values", "_channel", "__dict__",
    )

    # -- defaults, overridden per instance when set ---------------------------------------------------
    _client: tuple[str, int] | None = None  # asked of the channel when first needed
    _params: dict[str, Any] | None = None  # path parameters by name, built when asked
    _headers: Headers | None = None
    _query: QueryParams | None = None
    _cookies: dict[str, str] | None = None
    _state: dict[str, Any] | None = None
    _body: bytes | None = None  # the whole body, once read
    _streamed = False  # stream() has started reading the body: it is no longer there for body()
    _form: FormData | None = None  # parsed once; closed by ``aclose`` when the handler is done
    # What metrics record this request under when not its route's pattern: an ASGI app's own route
    # template, set by the adapter (asgi.py), since every ASGI request matches the same catch-all route.
    metrics_label: str | None = None

    def __init__(
        self,
        channel: Channel | None,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        path: str,
        raw_headers: RawHeaders,
        http_version: str = "1.1",
        keep_alive: bool = True,
        client: tuple[str, int] | None = None,
        scheme: str = "http",
        route: Any = None,
        path_values: tuple[Any, ...] | list[Any] = (),
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query_string = query_string
        self.path = path
        self.http_version = http_version
        self.keep_alive = keep_alive
        if client is not None:
            self._client = client
        self.scheme = scheme
        self.route = route  # the matched ``Route``, or None (404/405)
        # The header fields as received: ``(name, value)`` bytes pairs, names lowercased.
        self.raw_headers = raw_headers
        self.path_values = path_values  # path parameter values, converted, in the order the pattern names them
        self._channel = channel

    # -- lazily parsed views -----------------------------------------------------------------------
    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.raw_headers)
        return self._headers

    @property
    def client(self) -> tuple[str, int] | None:
        """The client's ``(host, port)`` (after ``--proxy-headers``, the proxied client's); None on a Unix socket."""
        client = self._client
        if client is None and self._channel is not None:
            client = self._client = self._channel.peer()
        return client

    @client.setter
    def client(self, client: tuple[str, int] | None) -> None:
        self._client = client

    @property
    def path_params(self) -> dict[str, Any]:
        """Path parameters by name, converted (``{"user_id": 42}``)."""
        params = self._params
        if params is None:
            values = self.path_values
            params = self._params = dict(zip(self.route.param_names, values)) if values else {}
        return params

    @path_params.setter
    def path_params(self, params: dict[str, Any]) -> None:
        self._params = params

    @property
    def query(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.query_string)
        return self._query

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            cookies: dict[str, str] = {}
            for value in self.headers.getall("cookie"):
                for k, v in parse_cookies(value).items():
                    cookies.setdefault(k, v)
            self._cookies = cookies
        return self._cookies

    @property
    def state(self) -> dict[str, Any]:
        """A per-request dict for middleware and handlers to share data."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def deadline(self) -> float | None:
        """When this request's budget runs out, in event-loop time (``loop.time()``), or None.

        Pass it on to what you await: ``async with asyncio.timeout_at(request.deadline): ...``.
        """
        return self._channel.deadline if self._channel is not None else None

    def time_left(self) -> float | None:
        """Seconds left in the budget (0.0 once past it), or None without a deadline.

        Fits ``asyncio.wait_for(..., timeout=request.time_left())`` and client timeouts.
        """
        deadline = self.deadline
        if deadline is None:
            return None
        left = deadline - asyncio.get_running_loop().time()
        return left if left > 0.0 else 0.0

    @property
    def is_disconnected(self) -> bool:
        """The client went away, or closed its side (EOF: it will send nothing more, and a client that
        closes normally does so with its request outstanding)."""
        channel = self._channel
        return channel is not None and (channel.disconnected or channel.peer_closed)

    async def wait_disconnected(self) -> None:
        """Return once the client has gone away (the ASGI adapter's ``http.disconnect``)."""
        if self._channel is not None:
            await self._channel.wait_disconnected()
        else:
            await asyncio.get_running_loop().create_future()  # no client to lose

    # -- body --------------------------------------------------------------------------------------
    async def body(self) -> bytes:
        """The whole body (bounded by the route's ``max_body_size``: past it, 413).

        After ``stream()`` has read it, the body is gone: ``RuntimeError`` (as Starlette's), never a
        silently empty or partial body. ``body()`` first, then ``stream()``, replays it."""
        if self._body is None:
            if self._streamed:
                raise RuntimeError(_CONSUMED)
            self._body = b"" if self._channel is None else await self._channel.read_body()
        return self._body

    async def json(self) -> Any:
        """The body parsed as JSON; invalid JSON ends the request with 400."""
        try:
            return orjson.loads(await self.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"Invalid JSON body: {exc}") from None

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the body chunk by chunk as it arrives, in constant memory (once: what it yielded is not
        kept, so a second ``stream()``, ``body()``, ``json()`` or ``form()`` raises ``RuntimeError``)."""
        if self._body is not None or self._channel is None:
            if self._body:
                yield self._body
            return
        if self._streamed:
            raise RuntimeError(_CONSUMED)
        self._streamed = True
        while True:
            chunks = await self._channel.read_chunks()
            if not chunks:
                return
            # What arrived since the last step, as one piece: a chunked body of one-byte chunks
            # would otherwise cost a trip through every consumer (the multipart parser...) per byte.
            # The batch is bounded: reading pauses once 256 KiB wait unread.
            yield chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def answer_now(self, result: Any) -> asyncio.Task[None] | None:
        """Answer now, from inside the handler, which keeps running (for adapters: the ASGI app answers
        from ``send()`` and may then run background work). A streamed answer gets a task of its own, returned
        (None when the answer was written or queued at once): the handler must not return before it is done,
        and what it returns is not sent once the answer is written."""
        if self._channel is None:
            raise RuntimeError("this request has no connection to answer on")
        return self._channel.answer_now(result)

    async def chunks(self) -> list[bytes]:
        """The body pieces that have arrived (waiting for some); ``[]`` once the body is complete.
        ``stream()`` without the generator, for adapters (the ASGI ``receive()``)."""
        if self._body is not None or self._channel is None:
            body, self._body = self._body, b""
            return [body] if body else []
        return await self._channel.read_chunks()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"

    # -- forms (forms.py) ----------------------------------------------------------------------------

    def _form_limits(self) -> FormLimits:
        return self._channel.form_limits if self._channel is not None else DEFAULT_LIMITS

    async def form(self, *, limits: FormLimits | None = None) -> FormData:
        """The body as a form (urlencoded or multipart/form-data; 415 otherwise), parsed once.

        Uploaded files are in ``form.files``; they are deleted when the request ends.
        """
        if self._form is None:
            self._form = await read_form(self, limits or self._form_limits())
        return self._form

    def multipart(self, *, limits: FormLimits | None = None) -> AsyncIterator[Part]:
        """The parts of a multipart/form-data body as they arrive (415 for another type):
        ``async for part in request.multipart(): async for chunk in part: ...``."""
        return iter_parts(self, limits or self._form_limits()).__aiter__()

    @property
    def holds_files(self) -> bool:
        """Whether reading the body left spooled upload files behind (``aclose`` releases them)."""
        return self._form is not None

    async def aclose(self) -> None:
        """Release what reading the body left behind; the connection calls it when the handler is done."""
        form = self._form
        if form is not None:
            self._form = None
            await form.aclose()
