"""The "none/off" spellings the flags take (``--max-body-size -1``, ``--timeout-write 0``, ...) are
keywords of ``serve()``/``run()`` too, meaning the same: a setting means one thing in both places.
``None`` keeps working."""

from __future__ import annotations

import pytest

from aioserve import App, Config
from aioserve.cli import build_parser, settings_from_args
from aioserve.config import SettingError
from tests.support import http_client, running

# -- the flags' "none/off" spellings mean the same as keywords ----------------------------------------

OFF_SPELLINGS = [  # keyword, flag, what the flag's help and README give for "none/off"
    ("max_body_size", "--max-body-size", -1),
    ("limit_form_file_size", "--limit-form-file-size", -1),
    ("timeout_write", "--timeout-write", 0),
    ("ws_ping_interval", "--ws-ping-interval", 0),
    ("ws_ping_timeout", "--ws-ping-timeout", 0),
]


@pytest.mark.parametrize("name,flag,off", OFF_SPELLINGS)
def test_the_flags_off_spelling_is_a_keyword_too(name, flag, off):
    spellings = (off, None) if name.startswith(("max_", "limit_")) else (off, float(off), None)  # ints / seconds
    for value in spellings:
        assert getattr(Config.from_settings(**{name: value}), name) is None, value
    cli = Config.from_settings(**settings_from_args(build_parser().parse_args(["x:app", flag, str(off)])))
    assert getattr(cli, name) is None
    assert cli == Config.from_settings(**{name: off})  # the same setting, whichever way it was spelled


@pytest.mark.parametrize("name,flag,off", OFF_SPELLINGS)
def test_only_the_off_spelling_is_taken(name, flag, off):
    with pytest.raises(SettingError) as info:
        Config.from_settings(**{name: off - 1})
    assert str(info.value).startswith(f"{name} must be ")
    assert f"or None or {off} for " in str(info.value)  # the keyword's message gives both spellings
    assert f"or {off} for " in info.value.flag_message and "None" not in info.value.flag_message
    with pytest.raises(SettingError):  # a bool is refused, False (== 0) included
        Config.from_settings(**{name: off != 0})


async def test_max_body_size_minus_one_lifts_the_limit():
    app = App()

    @app.post("/size")
    async def size(request):
        return str(len(await request.body()))

    body = b"x" * (1024 * 1024 + 1)
    async with running(app, max_body_size=-1, timeout_write=0, ws_ping_interval=0, ws_ping_timeout=0) as server:
        assert (server.config.timeout_write, server.config.ws_ping_interval, server.config.ws_ping_timeout) == (None,) * 3
        async with http_client(server) as client:
            r = await client.post("/size", content=body)
        assert (r.status_code, r.text) == (200, str(len(body)))
