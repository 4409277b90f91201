"""Logging: the access log (after the response, structured, per-route off), levels, --log-config."""
from __future__ import annotations

import json
import logging

import httpx2
import pytest

import aioserve
from aioserve.logconfig import JsonFormatter, configure_logging
from tests.support import ServerProcess, deployment_snippet, http_get


async def fetch(settings: dict, *paths: str) -> list[httpx2.Response]:
    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, port=0, **settings)
    try:
        async with httpx2.AsyncClient() as client:
            return [await client.get(server.url + path) for path in paths]
    finally:
        await server.shutdown(timeout=5)


async def test_access_log_after_the_response_with_structured_fields(access_records):
    (slow, streamed) = await fetch({}, "/slow?s=0.2", "/stream?n=50")
    assert len(access_records) == 2
    first, second = access_records
    assert first.method == "GET" and first.path == "/slow" and first.status == 200
    # Written once the answer was known. The handler sleeps 0.2 s on the loop's clock, which uvloop
    # keeps in whole milliseconds, so the wall time measured can be just under 200 ms.
    assert first.bytes == len(slow.content) and first.duration_ms >= 195
    assert first.client.startswith("127.0.0.1:")
    assert second.bytes == len(streamed.content)  # a stream is logged when it has been sent
    assert '"GET /slow?s=0.2 HTTP/1.1" 200' in first.getMessage()  # the target as sent; path is /slow


async def test_access_log_times_fast_answers_below_the_millisecond(access_records):
    """An inline handler answers within one loop iteration; its duration is still measured (uvloop's
    loop clock moves in whole milliseconds and would log 0.00ms)."""
    await fetch({}, "/", "/")
    assert len(access_records) == 2
    assert all(0.0 < r.duration_ms < 1000.0 for r in access_records)


async def test_access_log_off_per_route_and_globally(access_records):
    await fetch({}, "/health", "/health")
    assert access_records == []  # @app.get("/health", access_log=False)
    await fetch({"access_log": False}, "/", "/whoami")
    assert access_records == []


async def test_access_log_skipped_when_its_level_is_off(access_records):
    logging.getLogger("aioserve.access").setLevel(logging.WARNING)
    await fetch({}, "/")
    assert access_records == []


def test_json_formatter_carries_extra_fields():
    record = logging.LogRecord("aioserve.access", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.status = 204
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "hello x" and data["status"] == 204 and data["logger"] == "aioserve.access"


def test_log_level_applies_to_aioserve_loggers():
    base = logging.getLogger("aioserve")
    old = base.level, list(base.handlers), base.propagate
    try:
        configure_logging("warning")
        assert not logging.getLogger("aioserve.access").isEnabledFor(logging.INFO)
        configure_logging("debug")
        assert logging.getLogger("aioserve.access").isEnabledFor(logging.DEBUG)
    finally:
        base.setLevel(old[0])
        base.handlers[:] = old[1]
        base.propagate = old[2]


INI_CONFIG = """\
[loggers]
keys=root,aioserve
[handlers]
keys=err
[formatters]
keys=plain
[logger_root]
level=WARNING
handlers=
[logger_aioserve]
level=INFO
handlers=err
qualname=aioserve
propagate=0
[handler_err]
class=StreamHandler
formatter=plain
args=(sys.stderr,)
[formatter_plain]
format=INI|%(name)s|%(message)s
"""


def test_cli_json_log_config(tmp_path):
    path = tmp_path / "log.json"
    path.write_text(deployment_snippet("json"))  # the Deployment section's example, as documented
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--workers", "2", "--log-config", str(path)) as server:
        server.wait_listening()
        assert http_get(server.host, server.port, "/whoami?x=1")[0] == 200
        line = server.wait_for(r'"logger": "aioserve.access"')[0].string
        entry = json.loads(line)
        assert entry["path"] == "/whoami" and entry["status"] == 200 and entry["method"] == "GET"
        assert entry["bytes"] > 0 and entry["duration_ms"] >= 0 and entry["client"].startswith("127.0.0.1:")
        start = json.loads(server.wait_for("Listening on")[0].string)
        assert "workers: 2" in start["message"] and "loop: " in start["message"]


def test_cli_ini_log_config_and_level(tmp_path):
    path = tmp_path / "log.ini"
    path.write_text(INI_CONFIG)
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--log-config", str(path)) as server:
        server.wait_listening()
        assert server.wait_for(r"^INI\|aioserve\|Listening on http://127\.0\.0\.1:\d+ \(loop: \w+, workers: 1, pid: \d+\)")
        http_get(server.host, server.port, "/")
        server.wait_for(r'^INI\|aioserve.access\|127\.0\.0\.1:\d+ - "GET / HTTP/1.1" 200')
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--log-config", str(path), "--log-level", "warning") as quiet:
        quiet.wait_for("startup hook ran")  # a warning: still shown
        assert quiet.count("Listening on") == 0


@pytest.mark.parametrize("content,needle", [(None, "cannot read --log-config"), ("{not json", "invalid --log-config")])
def test_cli_bad_log_config_is_one_line(tmp_path, content, needle):
    path = tmp_path / "log.json"
    if content is not None:
        path.write_text(content)
    with ServerProcess("tests.support.apps:ops_app", "--log-config", str(path)) as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert len(server.lines) == 2 and server.lines[0].startswith("aioserve: error:") and needle in server.lines[0]
