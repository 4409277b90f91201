"""Validators and byte ranges for a representation of known size (RFC 9110 sections 13 and 14).

Pure functions over header strings, so the rules can be tested (and fuzzed) without a socket:
``evaluate_conditions`` decides 200 / 304 / 412 in the order of RFC 9110 13.2.2, and ``parse_range``
turns a Range header into sorted, merged byte spans. Merging sorts once and sweeps once, so a header
of many overlapping ranges costs O(n log n), never O(n^2) (Starlette CVE-2025-62727); the count is
capped anyway, since every span becomes a part of a multipart body.
"""
from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

from .datastructures import list_field

MAX_RANGES = 16  # more than this in one header: serve the whole representation instead

_SPEC = re.compile(r"([0-9]*)[ \t]*-[ \t]*([0-9]*)\Z")
_HUGE = 1 << 62  # any position past this is past the end of any file we could serve

#: ``parse_range`` results besides a list of spans.
IGNORE = None  # no Range, a unit other than bytes, bad syntax, too many ranges: answer 200
UNSATISFIABLE: list[tuple[int, int]] = []  # syntactically fine, but nothing inside the file: 416


def http_date_seconds(value: str | None) -> int | None:
    """An HTTP date as integral Unix seconds, or None when absent or unparseable (then ignored)."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None or parsed.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is not HTTP's
        return None
    try:
        return int(parsed.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def weak_match(header: str, etag: str) -> bool:
    """If-None-Match: weak comparison against a list, ``*`` matching any current representation."""
    mine = _opaque(etag)
    return any(tag == "*" or _opaque(tag) == mine for tag in _tags(header))


def strong_match(header: str, etag: str) -> bool:
    """If-Match: strong comparison; a weak tag (ours or theirs) never matches."""
    if etag.startswith("W/"):
        return any(tag == "*" for tag in _tags(header))
    return any(tag == "*" or tag == etag for tag in _tags(header))


def evaluate_conditions(headers, etag: str, mtime: int) -> int:
    """-> 200 (go on), 304 (not modified) or 412 (precondition failed), for GET and HEAD.

    ``headers`` is the request's (``get``/``getall`` by lowercase name); ``mtime`` the Last-Modified in
    seconds. If-Match and If-None-Match are lists: every line of them counts (RFC 9110 5.3).
    If-None-Match, when present, decides and If-Modified-Since is not looked at (RFC 9110 13.2.2).
    """
    if_match = list_field(headers, "if-match")
    if if_match is not None:
        if not strong_match(if_match, etag):
            return 412
    else:
        since = http_date_seconds(headers.get("if-unmodified-since"))
        if since is not None and mtime > since:
            return 412
    if_none_match = list_field(headers, "if-none-match")
    if if_none_match is not None:
        return 304 if weak_match(if_none_match, etag) else 200
    since = http_date_seconds(headers.get("if-modified-since"))
    if since is not None and mtime <= since:
        return 304
    return 200


def if_range_allows(value: str | None, etag: str, last_modified: str, mtime: float | None = None,
                    now: float | None = None) -> bool:
    """Whether a Range applies: no If-Range, a strongly matching tag, or a strong, exact Last-Modified.

    A date is a validator only when it is the exact Last-Modified and that is strong (RFC 9110 13.1.5,
    8.8.2.2): ``mtime``, the representation's modification time in seconds, at least one second
    before ``now`` (the clock, by default). A file changed within the last second may change again
    within the same second, keeping its Last-Modified: its date is weak, and the condition is false
    (so is it when ``mtime`` is not given).
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return not value.startswith("W/") and not etag.startswith("W/") and value == etag
    if value != last_modified or mtime is None:
        return False
    return (time.time() if now is None else now) - mtime >= 1.0


def parse_range(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """-> sorted, merged ``(start, end_inclusive)`` spans; ``UNSATISFIABLE`` ([]); or ``IGNORE`` (None)."""
    if not header:
        return IGNORE
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return IGNORE
    items = specs.split(",", MAX_RANGES)  # at most MAX_RANGES + 1 items: no work proportional to junk
    if len(items) > MAX_RANGES:
        return IGNORE
    spans: list[tuple[int, int]] = []
    for item in items:
        item = item.strip()
        if not item:
            continue  # RFC 9110 5.6.1: empty list elements are allowed and ignored
        match = _SPEC.match(item)
        if match is None:
            return IGNORE
        first, last = match.groups()
        if not (first or last):
            return IGNORE
        if not first:  # suffix: the last N bytes
            n = _number(last)
            if n > 0 and size > 0:
                spans.append((max(0, size - n), size - 1))
            continue
        start = _number(first)
        end = _number(last) if last else _HUGE
        if end < start:
            return IGNORE  # invalid range-spec: the whole field is invalid (RFC 9110 14.1.1)
        if start < size:
            spans.append((start, min(end, size - 1)))
    if not spans:
        return UNSATISFIABLE if any(i.strip() for i in items) else IGNORE
    spans.sort()
    merged = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end + 1:  # overlapping or adjacent: one part, not two
            if end > last_end:
                merged[-1] = (last_start, end)
        else:
            merged.append((start, end))
    return merged


def _number(digits: str) -> int:
    """A decimal position; absurdly long ones (int() refuses past 4,300 digits) are just "huge"."""
    return _HUGE if len(digits) > 18 else int(digits)
