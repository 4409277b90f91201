"""Handler results as responses: the conversions every layer above the model shares."""
from __future__ import annotations

from typing import Any

import orjson

from .errors import HTTPError
from .response import Response
from .wire import JSON_TYPE, OCTET_TYPE, REASONS, TEXT_TYPE


def error_response(exc: HTTPError) -> Response:
    """``HTTPError``'s answer: no detail, the reason phrase; dict/list, JSON; bytes, those bytes
    (application/octet-stream); anything else, its ``str`` as text/plain. ``headers`` may set the type."""
    detail = exc.detail
    if detail is None:
        response = Response(REASONS.get(exc.status, "Error"), exc.status, exc.headers, TEXT_TYPE)
    elif isinstance(detail, (dict, list)):
        response = Response(orjson.dumps(detail), exc.status, exc.headers, JSON_TYPE)
    elif isinstance(detail, (bytes, bytearray, memoryview)):  # the body as given, typed as a bytes result is
        response = Response(bytes(detail), exc.status, exc.headers, OCTET_TYPE)
    else:
        response = Response(str(detail), exc.status, exc.headers, TEXT_TYPE)
    return response


def to_response(result: Any) -> Response:
    """Handler results: Response as is; str text; bytes octets; dict/list JSON; None 204."""
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(result.encode("utf-8"), 200, None, TEXT_TYPE)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return Response(bytes(result), 200, None, OCTET_TYPE)
    if isinstance(result, (dict, list)):
        return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), 200, None, JSON_TYPE)
    if result is None:
        return Response(b"", 204)
    raise TypeError(
        f"handler returned {type(result).__name__}; return a Response, str, bytes, dict, list or None"
    )
