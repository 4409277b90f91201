"""Case-insensitive, multi-valued headers and query parameters.

Request-side containers keep the raw bytes the parser produced and decode on access, so a handler
that never looks at a header pays nothing for it.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Union
from urllib.parse import parse_qsl, unquote

from .wire import check_header

RawHeaders = list[tuple[bytes, bytes]]  # (lower-cased name, value)


class Headers:
    """Read-only request headers: ``get`` (first value), ``getall``, ``items`` (every pair, in order)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: RawHeaders) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        for k, v in self._raw:
            if k == key:
                return v.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._raw if k == key]

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw]

    def keys(self) -> list[str]:
        return list(dict.fromkeys(k.decode("latin-1") for k, _ in self._raw))

    def values(self) -> list[str]:
        return [v.decode("latin-1") for _, v in self._raw]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower().encode("latin-1")
        return any(k == key for k, _ in self._raw)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


HeadersInit = Union[Mapping[str, str], Iterable[tuple[str, str]], None]


class MutableHeaders:
    """Response headers: a list of (name, value) pairs with case-insensitive access.

    Every name and value is checked when set, so a CR or LF from application data can never split a
    response (``ValueError`` instead).
    """

    __slots__ = ("_list",)

    def __init__(self, init: HeadersInit = None) -> None:
        self._list: list[tuple[str, str]] = []
        if init:
            pairs = init.items() if isinstance(init, Mapping) else init
            for name, value in pairs:
                self.add(name, value)

    def add(self, name: str, value: str) -> None:
        value = str(value)
        check_header(name, value)
        self._list.append((name, value))

    def __setitem__(self, name: str, value: str) -> None:
        value = str(value)
        check_header(name, value)
        key = name.lower()
        self._list = [(k, v) for k, v in self._list if k.lower() != key]
        self._list.append((name, value))

    def setdefault(self, name: str, value: str) -> str:
        current = self.get(name)
        if current is None:
            self.add(name, value)
            return value
        return current

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        before = len(self._list)
        self._list = [(k, v) for k, v in self._list if k.lower() != key]
        if len(self._list) == before:
            raise KeyError(name)

    def pop(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name, default)
        key = name.lower()
        self._list = [(k, v) for k, v in self._list if k.lower() != key]
        return value

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower()
        for k, v in self._list:
            if k.lower() == key:
                return v
        return default

    def getall(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self._list if k.lower() == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._list)

    def keys(self) -> list[str]:
        return [k for k, _ in self._list]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._list)

    def __bool__(self) -> bool:
        return bool(self._list)

    def __repr__(self) -> str:
        return f"MutableHeaders({self._list!r})"


def parse_query(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its per-field decoding work when there is
    nothing to decode (no ``%``, no ``+``: most queries), where it costs several times the request."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    pairs = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((name, value))
    return pairs


class QueryParams:
    """Multi-valued query parameters: ``q["a"]``/``get`` give the first value, ``getall`` every value."""

    __slots__ = ("_pairs", "_first")

    def __init__(self, query: bytes | str | Iterable[tuple[str, str]] = b"") -> None:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        if isinstance(query, str):
            self._pairs = parse_query(query)
        else:
            self._pairs = list(query)
        self._first: dict[str, str] = {}
        for k, v in self._pairs:
            self._first.setdefault(k, v)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._first.get(key, default)

    def getall(self, key: str) -> list[str]:
        return [v for k, v in self._pairs if k == key]

    def __getitem__(self, key: str) -> str:
        return self._first[key]

    def __contains__(self, key: object) -> bool:
        return key in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def keys(self):
        return self._first.keys()

    def values(self):
        return self._first.values()

    def items(self):
        return self._first.items()

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryParams):
            return sorted(self._pairs) == sorted(other._pairs)
        if isinstance(other, Mapping):
            return self._first == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"QueryParams({self._pairs!r})"


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently (as browsers send it): bad pairs are skipped, not fatal."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies.setdefault(name, unquote(value))
    return cookies


def list_field(headers, name: str) -> str | None:
    """A list-valued field (RFC 9110 5.3: repeated lines form one comma-separated list) as one value.

    Every line of ``name`` in ``headers`` (``Headers``, ``MutableHeaders``, or anything with ``get``
    and ``getall``) joined with ", ", or None when there is none. A plain mapping has one value.
    """
    getall = getattr(headers, "getall", None)
    if getall is None:
        return headers.get(name)
    values = getall(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else ", ".join(values)
