"""``python -m aioserve MODULE:ATTR``: flags follow uvicorn's names where one exists.

Every problem the user can fix (a bad target, a port in use, a bad flag value) ends in one line on
stderr starting with ``aioserve: error:`` and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from typing import Any, Sequence

from . import __version__
from .app import App
from .router import Router


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        self.exit(2, f"aioserve: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m aioserve", description="Serve an aioserve App or Router.")
    p.add_argument("target", help="MODULE:ATTR naming an App, a Router, an ASGI 3 app, or (with --factory) a callable "
                                  "returning one")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; '::' for IPv6)")
    p.add_argument("--port", type=int, default=8000, help="bind port (default 8000; 0 picks a free one)")
    p.add_argument("--uds", help="bind a Unix domain socket at this path instead of host/port")
    p.add_argument("--fd", type=int, help="serve on an inherited, already listening socket descriptor")
    p.add_argument("--factory", action="store_true", help="TARGET is a callable that returns the app")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop (default auto: uvloop when installed)")
    p.add_argument("--log-level", default=None, choices=["critical", "error", "warning", "info", "debug", "trace"],
                   help="level of the aioserve loggers (default info, or as --log-config says)")
    p.add_argument("--log-config", metavar="FILE",
                   help="logging config: .json (dictConfig), .yaml (needs PyYAML) or INI (fileConfig)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="log one line per request (default on)")
    p.add_argument("--server-header", default="aioserve", help="Server header value; '' turns it off")
    p.add_argument("--backlog", type=int, default=2048, help="listen() backlog (default 2048)")
    p.add_argument("--accept-batch", type=int, default=64,
                   help="connections accepted at once when the listening socket is ready (default 64; "
                        "0 leaves accepting to the event loop, which with uvloop takes one per iteration)")
    p.add_argument("--max-body-size", type=int, default=1024 * 1024,
                   help="largest request body in bytes (default 1048576; -1 for no limit)")
    p.add_argument("--limit-pipeline", type=int, default=32,
                   help="pipelined requests queued per connection before reading pauses (default 32)")
    p.add_argument("--limit-request-line", type=int, default=8192,
                   help="longest request target in bytes; 414 past it (default 8192)")
    p.add_argument("--limit-request-fields", type=int, default=100,
                   help="most header fields in a request; 431 past it (default 100)")
    p.add_argument("--limit-request-header-size", type=int, default=32768,
                   help="largest header section in bytes; 431 past it (default 32768)")
    p.add_argument("--limit-form-parts", type=int, default=1000,
                   help="most fields and files in one form body; 413 past it (default 1000)")
    p.add_argument("--limit-form-field-size", type=int, default=1024 * 1024,
                   help="largest form field (not file) in bytes; 413 past it (default 1048576)")
    p.add_argument("--limit-form-file-size", type=int, default=-1,
                   help="largest uploaded file in bytes; 413 past it (default -1: only --max-body-size)")
    p.add_argument("--limit-form-part-header-size", type=int, default=8192,
                   help="largest header section of one multipart part in bytes; 413 past it (default 8192)")
    p.add_argument("--limit-connections", type=int, default=None,
                   help="most open connections; past it a new one gets 503 and is closed (default none)")
    p.add_argument("--limit-chunk-extension", type=int, default=4096,
                   help="bytes of chunk extensions allowed per chunk of a request body; 400 past it (default 4096)")
    p.add_argument("--limit-in-flight", type=int, default=None,
                   help="requests in progress past which new ones get 503 + Retry-After at once (default: no limit)")
    p.add_argument("--timeout-keep-alive", type=float, default=75.0, help="idle keep-alive timeout, s (default 75)")
    p.add_argument("--timeout-header", type=float, default=15.0, help="time to send a request head, s (default 15)")
    p.add_argument("--timeout-body", type=float, default=30.0, help="time a stalled body may wait, s (default 30)")
    p.add_argument("--timeout-write", type=float, default=30.0,
                   help="how long a client may leave a response unread before it is dropped, s (default 30; 0 off)")
    p.add_argument("--timeout-graceful-shutdown", type=float, default=30.0,
                   help="how long shutdown waits for in-flight requests, s (default 30)")
    p.add_argument("--min-request-body-rate", type=float, default=240.0,
                   help="slowest request body, bytes/s averaged after the grace period; slower gets 408 "
                        "(default 240; 0 off)")
    p.add_argument("--min-response-rate", type=float, default=240.0,
                   help="slowest a client may read a response, bytes/s after the grace period; slower is dropped "
                        "(default 240; 0 off)")
    p.add_argument("--min-rate-grace-period", type=float, default=5.0,
                   help="seconds before the minimum data rates apply (default 5)")
    # processes
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes sharing the socket (default $WEB_CONCURRENCY or 1)")
    p.add_argument("--limit-max-requests", type=int, metavar="N",
                   help="replace a worker after about N requests (+0-10%% jitter)")
    p.add_argument("--timeout-worker-healthcheck", type=float, default=10.0,
                   help="kill a worker whose event loop is silent this long, s (default 10)")
    # sockets and TLS
    p.add_argument("--ssl-keyfile", help="TLS private key (PEM)")
    p.add_argument("--ssl-certfile", help="TLS certificate chain (PEM)")
    p.add_argument("--ssl-keyfile-password", help="password of an encrypted --ssl-keyfile")
    p.add_argument("--ssl-ca-certs", help="CA certificates (PEM) to verify client certificates")
    p.add_argument("--ssl-cert-reqs", type=int, default=0, choices=[0, 1, 2],
                   help="client certificate: 0 none (default), 1 optional, 2 required")
    p.add_argument("--ssl-ciphers", help="OpenSSL cipher string (default: OpenSSL's)")
    # proxies
    p.add_argument("--proxy-headers", action=argparse.BooleanOptionalAction, default=False,
                   help="take the client address and scheme from Forwarded / X-Forwarded-* sent by a trusted proxy")
    p.add_argument("--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
                   help="comma-separated proxy addresses or networks to trust, '*' for all, 'unix:' for "
                        "Unix-socket peers (default $FORWARDED_ALLOW_IPS or 127.0.0.1)")
    # WebSocket
    p.add_argument("--ws-max-size", type=int, default=1024 * 1024,
                   help="largest WebSocket message in bytes, after decompression; past it close 1009 (default 1048576)")
    p.add_argument("--ws-ping-interval", type=float, default=20.0,
                   help="seconds between WebSocket keep-alive pings (default 20; 0 off)")
    p.add_argument("--ws-ping-timeout", type=float, default=20.0,
                   help="seconds a WebSocket peer has to answer a ping or a close before it is dropped (default 20; 0 off)")
    p.add_argument("--ws-per-message-deflate", action=argparse.BooleanOptionalAction, default=True,
                   help="offer permessage-deflate compression to WebSocket clients (default on)")
    # real time, for any app; ASGI apps
    p.add_argument("--deadline", type=float, default=None,
                   help="default time budget of every request, s: past it 503 + Retry-After if not started (an App's own wins)")
    p.add_argument("--metrics", metavar="PATH", default=None, help="serve Prometheus metrics at PATH (any app, ASGI included)")
    p.add_argument("--interface", choices=["auto", "aioserve", "asgi"], default="auto",
                   help="what TARGET is (default auto: an App or Router is aioserve, another callable ASGI 3); "
                        "asgi serves even an App through the ASGI adapter")
    p.add_argument("--lifespan", choices=["auto", "on", "off"], default="auto",
                   help="ASGI lifespan: auto runs it and carries on if the app does not support it (default auto)")
    p.add_argument("--root-path", default="", help="scope['root_path'] of an ASGI app mounted below a prefix")
    # development
    p.add_argument("--reload", action="store_true", help="restart when a Python file changes (development)")
    p.add_argument("--reload-dir", action="append", dest="reload_dirs", metavar="DIR",
                   help="directory to watch (repeatable; default the current directory)")
    p.add_argument("--reload-delay", type=float, default=0.25,
                   help="polling interval when watchfiles is not installed, s (default 0.25)")
    p.add_argument("--version", action="version", version=f"aioserve {__version__}")
    return p


def _workers(args: argparse.Namespace) -> int:
    """--workers, else $WEB_CONCURRENCY (as gunicorn and uvicorn read it), else 1."""
    if args.workers is not None:
        return args.workers
    value = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not value:
        return 1
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(f"WEB_CONCURRENCY (the default of --workers) must be an integer >= 1, not {value!r}; "
                         "fix or unset it, or pass --workers")
    return workers


def die(message: str) -> None:
    sys.stderr.write(f"aioserve: error: {message}\n")
    raise SystemExit(1)


def load_target(target: str, factory: bool = False, interface: str = "auto", call_factory: bool = True) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted) and return something servable.

    ``run()`` then serves it as ``interface`` says (``server.servable()``); the checks here only turn
    a target that cannot be served that way into one line. ``call_factory=False`` (the reloader, which
    serves nothing) checks that a ``factory`` is callable and returns it uncalled."""
    from .server import a_type

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        die(f"target {target!r} must look like MODULE:ATTR, e.g. examples.hello:app")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            die(f"cannot import module {module_name!r}: no module named {exc.name!r} (run from the directory that contains it)")
        die(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")
    except Exception as exc:
        die(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")
    obj: Any = module
    found = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = f"module {module_name!r}" if found == module_name else found
            die(f"{owner} has no attribute {part!r}")
        found += (":" if found == module_name else ".") + part
    what = f"{target} is"  # what the messages below say obj is
    if factory:
        if isinstance(obj, (App, Router)) or not callable(obj):
            die(f"--factory was given but {target} is {a_type(obj)}, not a callable that returns one")
        if not call_factory:
            return obj
        try:
            obj = obj()
        except Exception as exc:
            die(f"the factory {target} raised {type(exc).__name__}: {exc}")
        if inspect.isawaitable(obj):
            if inspect.iscoroutine(obj):
                obj.close()  # never awaited, on purpose: no "was never awaited" warning
            die(f"the factory {target} is async (it returned {a_type(obj)}); --factory needs a plain function "
                "that returns the app")
        what = f"the factory {target} returned"
    if interface == "asgi":  # an App is an ASGI 3 app itself; a Router is served by a default App
        if not isinstance(obj, Router) and not callable(obj):
            die(f"--interface asgi was given but {what} {_kind(obj)}, not an ASGI callable")
        return obj
    if isinstance(obj, (App, Router)):
        return obj
    if interface == "aioserve":
        die(f"--interface aioserve was given but {what} {_kind(obj)}, not an App or Router")
    from .asgi import is_asgi

    if is_asgi(obj) and _takes_three(obj):
        return obj
    if callable(obj) and not factory:
        die(f"{target} is a callable, not an App or Router; add --factory if it returns one")
    die(f"{what} {_kind(obj)}, not an aioserve App or Router (or an ASGI 3 app)")
    raise AssertionError  # unreachable


def _kind(obj: Any) -> str:
    """``None``, ``an int``, ``a function``: what a target turned out to be, for an error line."""
    from .server import a_type

    return "None" if obj is None else a_type(obj)


def _takes_three(obj: Any) -> bool:
    """Called as ``app(scope, receive, send)``: an ASGI 3 callable rather than an app factory."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return True  # a C callable, say: take it at its word
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "uds": args.uds,
        "fd": args.fd,
        "loop": args.loop,
        "log_level": args.log_level,
        "access_log": args.access_log,
        "server_header": args.server_header or None,
        "backlog": args.backlog,
        "accept_batch": args.accept_batch,
        "max_body_size": None if args.max_body_size == -1 else args.max_body_size,
        "limit_pipeline": args.limit_pipeline,
        "limit_request_line": args.limit_request_line,
        "limit_request_fields": args.limit_request_fields,
        "limit_request_header_size": args.limit_request_header_size,
        "limit_connections": args.limit_connections,
        "limit_form_parts": args.limit_form_parts,
        "limit_form_field_size": args.limit_form_field_size,
        "limit_form_file_size": None if args.limit_form_file_size == -1 else args.limit_form_file_size,
        "limit_form_part_header_size": args.limit_form_part_header_size,
        "timeout_write": args.timeout_write or None,
        "limit_in_flight": args.limit_in_flight,
        "limit_chunk_extension": args.limit_chunk_extension,
        "timeout_keep_alive": args.timeout_keep_alive,
        "timeout_header": args.timeout_header,
        "timeout_body": args.timeout_body,
        "timeout_graceful_shutdown": args.timeout_graceful_shutdown,
        "min_request_body_rate": args.min_request_body_rate,
        "min_response_rate": args.min_response_rate,
        "min_rate_grace_period": args.min_rate_grace_period,
        "workers": _workers(args),
        "limit_max_requests": args.limit_max_requests,
        "timeout_worker_healthcheck": args.timeout_worker_healthcheck,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile_password": args.ssl_keyfile_password,
        "ssl_ca_certs": args.ssl_ca_certs,
        "ssl_cert_reqs": args.ssl_cert_reqs,
        "ssl_ciphers": args.ssl_ciphers,
        "proxy_headers": args.proxy_headers,
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "log_config": args.log_config,
        "reload": args.reload,
        "reload_dirs": args.reload_dirs,
        "reload_delay": args.reload_delay,
        "ws_max_size": args.ws_max_size,
        "ws_ping_interval": args.ws_ping_interval or None,
        "ws_ping_timeout": args.ws_ping_timeout or None,
        "ws_per_message_deflate": args.ws_per_message_deflate,
        "deadline": args.deadline,
        "metrics": args.metrics,
        "factory": args.factory,
        "interface": args.interface,
        "lifespan": args.lifespan,
        "root_path": args.root_path,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from .config import Config, SettingError

    try:  # settings errors before the import, so a bad flag is reported even when the target is fine
        Config.from_settings(**settings_from_args(args))
    except SettingError as exc:
        die(exc.flag_message)
    except (ValueError, TypeError) as exc:
        die(str(exc))
    from .reload import is_reload_child

    # The reloader only watches files: it imports the target to report a bad one early, but the factory
    # runs only where the app is served (it may open connections or files).
    reloader = args.reload and not is_reload_child()
    try:
        app = load_target(args.target, args.factory, args.interface, call_factory=not reloader)
    except KeyboardInterrupt:  # Ctrl-C while the module imports or the factory runs: no traceback
        raise SystemExit(130) from None
    from .asgi import LifespanError
    from .processes import run

    try:  # the factory was called above (for its one-line errors) unless this is the reloader
        run(app, **{**settings_from_args(args), "factory": args.factory and reloader})
    except SettingError as exc:
        die(exc.flag_message)
    except LifespanError as exc:
        die(str(exc))
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        # The settings and the target were checked above, so this is the app's start-up (a hook raised):
        # its traceback for the developer, then the one line.
        logging.getLogger("aioserve.error").error("Start-up failed", exc_info=exc)
        die(f"start-up failed: {type(exc).__name__}: {exc} (traceback above)")
