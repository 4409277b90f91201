"""The request model.

One ``Request`` per request, built when its head is parsed. It decodes lazily: headers, query and
cookies are parsed the first time a handler asks. The body is delivered by the connection
(``HttpProtocol``) as it arrives; ``body()``, ``json()`` and ``stream()`` read it, and reading is what
triggers ``100 Continue`` and un-pauses a transport paused for backpressure.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator

import orjson

from .datastructures import Headers, QueryParams, RawHeaders, parse_cookies
from .errors import ClientDisconnected, HTTPError

if TYPE_CHECKING:
    from .forms import FormData, FormLimits, Part
    from .protocol import HttpProtocol


class Request:
    # What every request sets lives in slots. Everything else starts as a class-level default and
    # lands in the instance ``__dict__`` only when a request sets it (a body, a deadline, parsed
    # headers...), so building a request costs a score of stores, not forty.
    __slots__ = (
        # what the client sent
        "method", "raw_path", "query_string", "path", "http_version", "keep_alive", "scheme",
        "_raw_headers", "_values", "route",
        # set by the connection for every request
        "_conn", "_complete", "_expect_continue", "_out", "_close", "_status", "_task",
        "__dict__",
    )

    # -- defaults, overridden per instance when set ---------------------------------------------------
    _client: tuple[str, int] | None = None  # asked of the connection when first needed
    _params: dict[str, Any] | None = None  # path parameters by name, built when asked
    _headers: Headers | None = None
    _query: QueryParams | None = None
    _cookies: dict[str, str] | None = None
    _state: dict[str, Any] | None = None
    # the body, as the connection delivers it
    max_body_size: int | None = None  # the route's (or server's) limit; set when a body is announced
    _chunks: list[bytes] | tuple[()] = ()
    _received = 0
    _waiter: asyncio.Future[None] | None = None
    _disconnected = False
    _body: bytes | None = None
    # response bookkeeping, owned by the connection
    _turn: asyncio.Future[None] | None = None
    _start = 0.0
    _error: Exception | None = None  # a routing or body error to raise to the reader
    _continue_due = False
    # real-time budget (realtime.py): absolute deadline (loop time), its timer, accounting state
    _deadline: float | None = None
    _timer: asyncio.TimerHandle | None = None
    _rt = 0  # 0 not counted, 1 in flight, 2 answered
    _expired = False
    _t0 = 0.0  # perf_counter() when the head was parsed (for measuring; deadlines use loop time)

    def __init__(
        self,
        conn: HttpProtocol | None,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        path: str,
        raw_headers: RawHeaders,
        http_version: str = "1.1",
        keep_alive: bool = True,
        client: tuple[str, int] | None = None,
        scheme: str = "http",
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
        self._raw_headers = raw_headers
        self._values: tuple[Any, ...] = ()  # path parameter values, in pattern order
        self.route: Any = None
        self._conn = conn
        self._complete = False
        self._expect_continue = False
        self._out: bytes | tuple[bytes, bytes] | None = None
        self._close = False
        self._status = 0
        self._task: asyncio.Task[None] | None = None

    # -- lazily parsed views -----------------------------------------------------------------------
    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._raw_headers)
        return self._headers

    @property
    def client(self) -> tuple[str, int] | None:
        """The client's ``(host, port)`` (after ``--proxy-headers``, the proxied client's); None on a Unix socket."""
        client = self._client
        if client is None and self._conn is not None:
            client = self._client = self._conn.peer()
        return client

    @client.setter
    def client(self, client: tuple[str, int] | None) -> None:
        self._client = client

    @property
    def path_params(self) -> dict[str, Any]:
        """Path parameters by name, converted (``{"user_id": 42}``)."""
        params = self._params
        if params is None:
            values = self._values
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
        return self._deadline

    def time_left(self) -> float | None:
        """Seconds left in the budget (0.0 once past it), or None without a deadline.

        Fits ``asyncio.wait_for(..., timeout=request.time_left())`` and client timeouts.
        """
        deadline = self._deadline
        if deadline is None:
            return None
        left = deadline - asyncio.get_running_loop().time()
        return left if left > 0.0 else 0.0

    @property
    def is_disconnected(self) -> bool:
        return self._disconnected

    # -- body --------------------------------------------------------------------------------------
    async def body(self) -> bytes:
        """The whole body (bounded by the route's ``max_body_size``: past it, 413)."""
        if self._body is None:
            while not self._complete:
                await self._wait_for_body()
            chunks = self._chunks
            self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._chunks = []
            if self._conn is not None:
                self._conn.body_consumed(self)
        return self._body

    async def json(self) -> Any:
        """The body parsed as JSON; invalid JSON ends the request with 400."""
        try:
            return orjson.loads(await self.body())
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, f"Invalid JSON body: {exc}") from None

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the body chunk by chunk as it arrives, in constant memory."""
        if self._body is not None:
            if self._body:
                yield self._body
            return
        while True:
            if self._chunks:
                chunks = self._chunks
                self._chunks = []
                if self._conn is not None:
                    self._conn.body_consumed(self)
                for piece in chunks:
                    yield piece
            elif self._complete:
                self._body = b""
                return
            else:
                await self._wait_for_body()

    async def _wait_for_body(self) -> None:
        if self._error is not None:
            raise self._error
        if self._disconnected:
            raise ClientDisconnected("client disconnected before sending the whole body")
        if self._conn is None:  # built by hand (tests): no more body will come
            self._complete = True
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self._conn.body_wanted(self)
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error
        if self._disconnected and not self._complete:
            raise ClientDisconnected("client disconnected before sending the whole body")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"

    # -- forms (forms.py) ----------------------------------------------------------------------------
    _form: FormData | None = None  # parsed once; the connection closes it when the exchange ends
    form_limits: FormLimits | None = None  # the server's limits, set by the connection; None: defaults

    async def form(self, *, limits: FormLimits | None = None) -> FormData:
        """The body as a form (urlencoded or multipart/form-data; 415 otherwise), parsed once.

        Uploaded files are in ``form.files``; they are deleted when the request ends.
        """
        if self._form is None:
            from .forms import DEFAULT_LIMITS, read_form

            self._form = await read_form(self, limits or self.form_limits or DEFAULT_LIMITS)
        return self._form

    def multipart(self, *, limits: FormLimits | None = None) -> AsyncIterator[Part]:
        """The parts of a multipart/form-data body as they arrive (415 for another type):
        ``async for part in request.multipart(): async for chunk in part: ...``."""
        from .forms import DEFAULT_LIMITS, iter_parts

        return iter_parts(self, limits or self.form_limits or DEFAULT_LIMITS).__aiter__()
