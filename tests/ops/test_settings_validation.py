"""Every setting is checked at start-up (issue 16): a bad value stops the CLI with one line naming the
flag and its valid range, and makes ``serve()``/``run()`` raise ``ValueError`` naming the keyword.

The two walks below cover every flag in ``--help`` and every ``Config`` field; a new setting without
a bad-value entry here fails ``test_every_flag_is_walked`` / ``test_every_field_is_walked``."""

from __future__ import annotations

import dataclasses
import re

import pytest

import aioserve
from aioserve import App, Config
from aioserve.cli import build_parser
from aioserve.config import SettingError, flag_name
from tests.support import run_cli

TARGET = "examples.hello:app"

# flag -> (extra arguments, text the one error line must contain). The line always starts with
# "aioserve: error:". Most values are refused by Config.validate; flags with fixed choices by argparse;
# --host and --log-config can only be judged by trying them (binding, reading the file).
BAD_FLAGS: dict[str, tuple[list[str], str]] = {
    "--host": (["--host", "no such host!", "--port", "0"], "cannot listen on no such host!"),
    "--port": (["--port", "65536"], "--port must be an integer from 0 to 65535, not 65536"),
    "--uds": (["--uds", ""], "--uds must be a non-empty string, not ''"),
    "--fd": (["--fd", "-1"], "--fd must be an integer >= 0, not -1"),
    "--loop": (["--loop", "trio"], "argument --loop: invalid choice: 'trio'"),
    "--log-level": (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    "--log-config": (["--log-config", "/nonexistent/log.json", "--port", "0"], "cannot read --log-config"),
    "--server-header": (["--server-header", "a\x01b"], "--server-header must be printable ASCII text"),
    "--backlog": (["--backlog", "-5"], "--backlog must be an integer from 1 to 2147483647, not -5"),
    "--accept-batch": (["--accept-batch", "-1"], "--accept-batch must be an integer >= 0, not -1"),
    "--max-body-size": (["--max-body-size", "-2"], "--max-body-size must be an integer >= 0, or -1 for no limit, not -2"),
    "--limit-pipeline": (["--limit-pipeline", "0"], "--limit-pipeline must be an integer >= 1, not 0"),
    "--limit-request-line": (["--limit-request-line", "0"], "--limit-request-line must be an integer >= 1, not 0"),
    "--limit-request-fields": (["--limit-request-fields", "0"], "--limit-request-fields must be an integer >= 1, not 0"),
    "--limit-request-header-size": (["--limit-request-header-size", "-1"],
                                    "--limit-request-header-size must be an integer >= 1, not -1"),
    "--limit-connections": (["--limit-connections", "0"], "--limit-connections must be an integer >= 1, not 0"),
    "--limit-chunk-extension": (["--limit-chunk-extension", "0"], "--limit-chunk-extension must be an integer >= 1, not 0"),
    "--limit-form-parts": (["--limit-form-parts", "0"], "--limit-form-parts must be an integer >= 1, not 0"),
    "--limit-form-field-size": (["--limit-form-field-size", "0"], "--limit-form-field-size must be an integer >= 1, not 0"),
    "--limit-form-file-size": (["--limit-form-file-size", "0"],
                               "--limit-form-file-size must be an integer >= 1, or -1 for no limit, not 0"),
    "--limit-form-part-header-size": (["--limit-form-part-header-size", "0"],
                                      "--limit-form-part-header-size must be an integer >= 1, not 0"),
    "--limit-in-flight": (["--limit-in-flight", "0"], "--limit-in-flight must be an integer >= 1, not 0"),
    "--timeout-keep-alive": (["--timeout-keep-alive", "0"], "--timeout-keep-alive must be a number > 0, not 0.0"),
    "--timeout-header": (["--timeout-header", "-1"], "--timeout-header must be a number > 0, not -1.0"),
    "--timeout-body": (["--timeout-body", "nan"], "--timeout-body must be a number > 0, not nan"),
    "--timeout-write": (["--timeout-write", "-1"], "--timeout-write must be a number > 0, or 0 for off, not -1.0"),
    "--timeout-graceful-shutdown": (["--timeout-graceful-shutdown", "-1"],
                                    "--timeout-graceful-shutdown must be a number >= 0, not -1.0"),
    "--min-request-body-rate": (["--min-request-body-rate", "-1"], "--min-request-body-rate must be a number >= 0, not -1.0"),
    "--min-response-rate": (["--min-response-rate", "inf"], "--min-response-rate must be a number >= 0, not inf"),
    "--min-rate-grace-period": (["--min-rate-grace-period", "0"], "--min-rate-grace-period must be a number > 0, not 0.0"),
    "--workers": (["--workers", "0"], "--workers must be an integer >= 1, not 0"),
    "--limit-max-requests": (["--limit-max-requests", "0"], "--limit-max-requests must be an integer >= 1, not 0"),
    "--timeout-worker-healthcheck": (["--timeout-worker-healthcheck", "0"],
                                     "--timeout-worker-healthcheck must be a number > 0, not 0.0"),
    "--ssl-keyfile": (["--ssl-keyfile", "key.pem"], "TLS needs both --ssl-keyfile and --ssl-certfile"),
    "--ssl-certfile": (["--ssl-certfile", "cert.pem"], "TLS needs both --ssl-keyfile and --ssl-certfile"),
    "--ssl-keyfile-password": (["--ssl-keyfile-password", "pw"], "--ssl-keyfile-password needs --ssl-certfile and --ssl-keyfile"),
    "--ssl-ca-certs": (["--ssl-ca-certs", "ca.pem"], "--ssl-ca-certs needs --ssl-certfile and --ssl-keyfile"),
    "--ssl-cert-reqs": (["--ssl-cert-reqs", "3"], "argument --ssl-cert-reqs: invalid choice: 3"),
    "--ssl-ciphers": (["--ssl-ciphers", "HIGH"], "--ssl-ciphers needs --ssl-certfile and --ssl-keyfile"),
    "--forwarded-allow-ips": (["--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/33"],
                              "--forwarded-allow-ips: '10.0.0.0/33' is not an IP address"),
    "--reload-dir": (["--reload-dir", "src"], "--reload-dir needs --reload"),
    "--reload-delay": (["--reload-delay", "0"], "--reload-delay must be a number > 0, not 0.0"),
    "--ws-max-size": (["--ws-max-size", "0"], "--ws-max-size must be an integer >= 1, not 0"),
    "--ws-ping-interval": (["--ws-ping-interval", "-1"], "--ws-ping-interval must be a number > 0, or 0 for off, not -1.0"),
    "--ws-ping-timeout": (["--ws-ping-timeout", "nan"], "--ws-ping-timeout must be a number > 0, or 0 for off, not nan"),
    "--deadline": (["--deadline", "0"], "--deadline must be a number > 0, not 0.0"),
    "--metrics": (["--metrics", ""], "--metrics must be a non-empty string, not ''"),
    "--interface": (["--interface", "wsgi"], "argument --interface: invalid choice: 'wsgi'"),
    "--lifespan": (["--lifespan", "maybe"], "argument --lifespan: invalid choice: 'maybe'"),
    "--root-path": (["--root-path", "api"], "--root-path must be empty or start with '/', not 'api'"),
}
# Switches have no value to get wrong; --help and --version exit 0 by design.
SWITCHES = {"--factory", "--access-log", "--no-access-log", "--proxy-headers", "--no-proxy-headers", "--reload",
            "--ws-per-message-deflate", "--no-ws-per-message-deflate", "--help", "--version"}


def test_every_flag_is_walked():
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", build_parser().format_help()))
    assert flags - SWITCHES == set(BAD_FLAGS), "flags without a bad-value case (or stale entries)"


@pytest.mark.parametrize("flag", sorted(BAD_FLAGS))
def test_bad_flag_value_is_one_line_and_a_nonzero_exit(flag):
    args, expected = BAD_FLAGS[flag]
    result = run_cli([TARGET, *args], timeout=20)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and lines[0].startswith("aioserve: error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_non_numeric_value_is_one_line():
    result = run_cli([TARGET, "--port", "http"])
    assert result.returncode != 0
    assert result.stderr.strip() == "aioserve: error: argument --port: invalid int value: 'http' (see --help)"


def test_port_99999_does_not_wrap_on_either_loop():
    """Before validation, asyncio listened on 99999 mod 65536 and uvloop never listened at all."""
    for loop in ("asyncio", "uvloop"):
        result = run_cli([TARGET, "--loop", loop, "--port", "99999"], timeout=20)
        assert result.returncode == 1
        assert result.stderr == "aioserve: error: --port must be an integer from 0 to 65535, not 99999\n"


# keyword -> a value outside its range (one per Config field)
BAD_KEYWORDS: dict[str, object] = {
    "host": 127,
    "port": 99999,
    "uds": "",
    "fd": -1,
    "loop": "trio",
    "log_level": "loud",
    "access_log": "yes",
    "server_header": "aioserve\r\nX-Injected: 1",
    "backlog": -5,
    "accept_batch": -1,
    "max_body_size": -2,  # -1 is the flag's "no limit", a keyword's too
    "limit_request_line": 0,
    "limit_request_fields": 0,
    "limit_request_header_size": 0,
    "limit_pipeline": 0,
    "limit_connections": 0,
    "limit_in_flight": 0,
    "limit_chunk_extension": 0,
    "limit_form_parts": 0,
    "limit_form_field_size": 0,
    "limit_form_file_size": 0,
    "limit_form_part_header_size": 0,
    "timeout_keep_alive": 0,
    "timeout_header": -1.0,
    "timeout_body": float("inf"),
    "timeout_write": -1,  # 0 is "off", as the flag's
    "timeout_graceful_shutdown": -1,
    "min_request_body_rate": -0.5,
    "min_response_rate": float("nan"),
    "min_rate_grace_period": 0,
    "workers": 0,
    "limit_max_requests": 0,
    "timeout_worker_healthcheck": 0,
    "ssl_keyfile": "",
    "ssl_certfile": "",
    "ssl_keyfile_password": 1234,
    "ssl_ca_certs": "",
    "ssl_cert_reqs": 3,
    "ssl_ciphers": "",
    "proxy_headers": 1,
    "forwarded_allow_ips": 10,
    "log_config": "",
    "reload": "no",
    "reload_dirs": "src",
    "reload_delay": -0.25,
    "ws_max_size": 0,
    "ws_ping_interval": -1,
    "ws_ping_timeout": -0.5,
    "ws_per_message_deflate": "yes",
    "deadline": 0,
    "metrics": "",
    "factory": "yes",
    "interface": "wsgi",
    "lifespan": "maybe",
    "root_path": "api",
}


def test_every_field_is_walked():
    assert [f.name for f in dataclasses.fields(Config)] == list(BAD_KEYWORDS)


def test_defaults_and_documented_off_values_are_valid():
    Config().validate()
    Config.from_settings(max_body_size=-1, limit_form_file_size=-1, timeout_write=0, ws_ping_interval=0,
                         ws_ping_timeout=0.0)
    Config.from_settings(max_body_size=None, timeout_write=None, timeout_graceful_shutdown=None,
                         min_request_body_rate=0, min_response_rate=0, server_header=None, port=0, fd=0,
                         limit_connections=None, backlog=1, timeout_body=0.001, reload=True, reload_dirs=["."])


@pytest.mark.parametrize("name", list(BAD_KEYWORDS))
def test_bad_keyword_raises_value_error_naming_it(name):
    with pytest.raises(ValueError) as info:
        Config.from_settings(**{name: BAD_KEYWORDS[name]})
    message = str(info.value)
    assert isinstance(info.value, SettingError)
    assert message.startswith(f"{name} must be "), message
    assert "\n" not in message
    # the CLI form names the flag in the same words
    assert info.value.flag_message.startswith(f"{flag_name(name)} must "), info.value.flag_message


@pytest.mark.parametrize("name", ["port", "backlog", "timeout_body", "min_rate_grace_period", "limit_chunk_extension"])
async def test_serve_raises_before_listening(name):
    with pytest.raises(ValueError, match=f"^{name} must be "):
        await aioserve.serve(App(), host="127.0.0.1", **{"port": 0, name: BAD_KEYWORDS[name]})


@pytest.mark.parametrize("name", ["port", "backlog", "workers", "min_response_rate"])
def test_run_raises_before_anything_starts(name):
    with pytest.raises(ValueError, match=f"^{name} must be "):
        App().run(**{name: BAD_KEYWORDS[name]})


@pytest.mark.parametrize("settings,message", [
    ({"ssl_keyfile": "k.pem"}, "TLS needs both ssl_keyfile and ssl_certfile"),
    ({"uds": "/tmp/s", "fd": 3}, "give either uds or fd, not both"),
    ({"ssl_cert_reqs": 2}, "ssl_cert_reqs needs ssl_certfile and ssl_keyfile"),
    ({"reload_dirs": ["src"]}, "reload_dirs needs reload"),
    ({"proxy_headers": True, "forwarded_allow_ips": "nope"}, "forwarded_allow_ips: 'nope' is not an IP address"),
])
def test_combinations_name_every_keyword(settings, message):
    with pytest.raises(SettingError) as info:
        Config.from_settings(**settings)
    assert str(info.value).startswith(message)


def test_new_rate_settings_have_their_defaults_and_flags():
    config = Config()
    assert (config.min_request_body_rate, config.min_response_rate, config.min_rate_grace_period,
            config.limit_chunk_extension) == (240.0, 240.0, 5.0, 4096)
    from aioserve.cli import settings_from_args

    args = build_parser().parse_args([TARGET, "--min-request-body-rate", "0", "--min-response-rate", "100.5",
                                      "--min-rate-grace-period", "2", "--limit-chunk-extension", "64"])
    settings = settings_from_args(args)
    assert (settings["min_request_body_rate"], settings["min_response_rate"], settings["min_rate_grace_period"],
            settings["limit_chunk_extension"]) == (0.0, 100.5, 2.0, 64)
    Config.from_settings(**settings)
