"""socketify.py (uWebSockets) benchmark app: ``python -m benchmarks.servers.socketify_app --port P``.

socketify's own idiom: ``(res, req)`` handlers; sync where nothing is awaited, async for the body read.
It logs nothing per request.
"""
from __future__ import annotations

import argparse

from socketify import App, AppListenOptions

from .payload import EXTRA_ROUTES, JSON_OBJ

try:
    import orjson

    class _Orjson:
        @staticmethod
        def dumps(obj):
            return orjson.dumps(obj).decode()

        @staticmethod
        def loads(s):
            return orjson.loads(s)

    SERIALIZER = _Orjson
except ImportError:  # pragma: no cover
    SERIALIZER = None


def plaintext(res, req):
    res.send(b"Hello, World!", content_type=b"text/plain")


def json_(res, req):
    res.send(JSON_OBJ)


def _make_extra(i: int):
    def extra(res, req):
        p = req.get_parameter(0)
        if not p.isdigit():
            res.send(b"Not Found", status=404)
            return
        res.send({"route": i, "id": int(p)})

    return extra


def user(res, req):
    p = req.get_parameter(0)
    if not p.isdigit():
        res.send(b"Not Found", status=404)
        return
    res.send({"id": int(p)})


# The body is read with socketify's callback API, keeping each in-flight response referenced until
# it is answered or aborted. (The documented ``await res.get_data()`` crashed socketify 0.0.31 under
# wrk load with "Fatal Python error: b_from_handle: ... already been garbage collected".)
_in_flight: set = set()


def _echo_data(res, chunk, is_end):
    if chunk:
        res._bench_chunks.append(chunk)
    if is_end:
        _in_flight.discard(res)
        res.send(b"".join(res._bench_chunks), content_type=b"application/json")


def echo(res, req):
    res._bench_chunks = []
    _in_flight.add(res)
    res.on_aborted(_in_flight.discard)
    res.on_data(_echo_data)


def make_app() -> App:
    app = App()
    if SERIALIZER is not None:
        app.json_serializer(SERIALIZER)
    app.get("/plaintext", plaintext)
    app.get("/json", json_)
    for i in range(EXTRA_ROUTES):
        app.get(f"/r{i}/:id/x", _make_extra(i))
    app.get("/users/:id", user)
    app.post("/echo", echo)
    return app


if __name__ == "__main__":
    import signal
    import sys

    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args()
    app = make_app()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.listen(AppListenOptions(port=a.port, host=a.host), lambda cfg: print(f"Listening on http://{a.host}:{a.port}", flush=True))
    app.run()
