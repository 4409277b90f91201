"""Every server setting in one place: the CLI flags, ``serve()`` and ``app.run()`` keywords map here 1:1.

Each setting's valid range is data (``_RANGES``), checked once at start-up, so a bad value stops the
server with one line naming the keyword or flag and its range, instead of misbehaving later (a port of
99999 wrapping to 34463, a negative backlog reaching ``listen()``).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Iterable

from .forms import FormLimits
from .logconfig import LEVELS

MiB = 1024 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(allow: str | Iterable[str]) -> tuple[bool, bool, set[str], list[Network]]:
    """``forwarded_allow_ips`` -> (trust all, trust Unix-socket peers, addresses, networks)."""
    items = [p.strip() for p in allow.split(",")] if isinstance(allow, str) else [p.strip() for p in allow]
    hosts: set[str] = set()
    networks: list[Network] = []
    for item in items:
        if not item or item in ("*", "unix:"):
            continue
        try:
            if "/" in item:
                networks.append(ipaddress.ip_network(item, strict=False))
            else:
                hosts.add(str(ipaddress.ip_address(item)))
        except ValueError:
            raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address, a network, '*' or 'unix:'") from None
    return "*" in items, "unix:" in items, hosts, networks


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    loop: str = "auto"  # auto | asyncio | uvloop
    log_level: str | None = None  # None: info, or what --log-config says
    access_log: bool = True
    server_header: str | None = "aioserve"
    backlog: int = 2048
    accept_batch: int = 64  # connections accepted per readiness of the listening socket; 0: the loop's own
    # limits
    max_body_size: int | None = 1 * MiB
    limit_request_line: int = 8192  # bytes of the request target (414 past it)
    limit_request_fields: int = 100  # header fields (431 past it)
    limit_request_header_size: int = 32768  # bytes of the header section (431 past it)
    limit_pipeline: int = 32  # queued requests per connection before reading pauses (resumes at half)
    limit_connections: int | None = None  # open connections; past it a new one gets 503 and is closed
    limit_in_flight: int | None = None  # past it, new requests get 503 at once (overrides App(limit_in_flight))
    limit_chunk_extension: int = 4096  # bytes of chunk extensions per chunk (400 past it)
    # form bodies (forms.py; 413 past each): see form_limits()
    limit_form_parts: int = 1000  # fields + files in one form
    limit_form_field_size: int = 1 * MiB  # bytes of one non-file field
    limit_form_file_size: int | None = None  # bytes of one uploaded file; None: only max_body_size
    limit_form_part_header_size: int = 8192  # bytes of one multipart part's header section
    # timeouts (seconds)
    timeout_keep_alive: float = 75.0
    timeout_header: float = 15.0
    timeout_body: float = 30.0
    timeout_write: float | None = 30.0
    timeout_graceful_shutdown: float | None = 30.0
    # minimum data rates (enforced by the connection): bytes/s averaged once the grace period is over
    min_request_body_rate: float = 240.0  # a slower body gets 408 and a close; 0: off
    min_response_rate: float = 240.0  # a client reading slower is dropped; 0: off
    min_rate_grace_period: float = 5.0  # s before either rate is enforced
    # processes (supervisor.py)
    workers: int = 1
    limit_max_requests: int | None = None  # recycle a worker after about this many requests
    timeout_worker_healthcheck: float = 10.0  # a worker silent this long is killed and replaced
    # TLS (tls.py)
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int = 0  # ssl.CERT_NONE; 2 (CERT_REQUIRED) demands a client certificate
    ssl_ciphers: str | None = None  # OpenSSL cipher string; None keeps OpenSSL's defaults
    # reverse proxies (proxy.py)
    proxy_headers: bool = False
    forwarded_allow_ips: str | list[str] = "127.0.0.1"
    # logging (logconfig.py)
    log_config: str | None = None
    # development (reload.py)
    reload: bool = False
    reload_dirs: list[str] | None = None  # default: the current directory
    reload_delay: float = 0.25  # polling interval of the fallback watcher, s
    # WebSocket (wsconn.py)
    ws_max_size: int = 1 * MiB  # bytes per message after decompression; past it close 1009
    ws_ping_interval: float | None = 20.0  # seconds between keep-alive pings; None: no pings
    ws_ping_timeout: float | None = 20.0  # no pong (or no close answer) this long: close 1011 / drop
    ws_per_message_deflate: bool = True
    # real time, for any app (an App's own deadline= wins); and ASGI apps (asgi.py)
    deadline: float | None = None  # seconds: the default budget of every request
    metrics: str | None = None  # serve Prometheus metrics at this path
    # what the target is: serve() and run() resolve it as the CLI does (server.servable())
    factory: bool = False  # call the target to get the app
    interface: str = "auto"  # auto (App or Router: aioserve; another callable: ASGI 3) | aioserve | asgi
    lifespan: str = "auto"  # auto | on | off: an ASGI app's lifespan protocol
    root_path: str = ""  # scope["root_path"] of an ASGI app

    def __post_init__(self) -> None:
        # A flag's spelling of "none" or "off" (--max-body-size -1, --timeout-write 0...) is taken from a
        # keyword too and means the same, so a setting reads alike in both places; None stays the keyword's.
        for name, off in _OFF.items():
            value = getattr(self, name)
            if value == off and (type(value) is int or (type(value) is float and _RANGES[name].kind == "number")):
                setattr(self, name, None)

    def form_limits(self) -> FormLimits:
        """The ``forms.FormLimits`` these settings describe (what ``request.form()`` uses by default)."""
        return FormLimits(
            max_parts=self.limit_form_parts, max_part_header_size=self.limit_form_part_header_size,
            max_field_size=self.limit_form_field_size, max_file_size=self.limit_form_file_size,
        )

    @classmethod
    def from_settings(cls, **settings: Any) -> Config:
        names = {f.name for f in dataclasses.fields(cls)} | {"reload_dir"}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        if "reload_dir" in settings:  # --reload-dir's own name; reload_dirs (the field) keeps working
            settings["reload_dirs"] = _reload_dir(settings.pop("reload_dir"), settings)
        config = cls(**settings)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`SettingError` for the first setting outside its range, in field order."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _RANGES:
                _RANGES[field.name].check(field.name, value)
            else:
                _SPECIAL[field.name](value)
        if self.reload and self.workers > 1:
            raise SettingError("--reload cannot be combined with --workers > 1 (reload runs one process)")
        if bool(self.ssl_keyfile) != bool(self.ssl_certfile):
            raise SettingError.naming("TLS needs both {} and {}", "ssl_keyfile", "ssl_certfile")
        for name in ("ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers", "ssl_cert_reqs"):
            if getattr(self, name) and not self.ssl_certfile:  # a TLS detail without TLS is a mistake
                raise SettingError.naming("{} needs {} and {}", name, "ssl_certfile", "ssl_keyfile")
        if self.ssl_cert_reqs and not self.ssl_ca_certs:  # no client certificate could ever verify
            raise SettingError.naming("{} 1 or 2 needs {}: the CA certificates to verify client certificates with",
                                      "ssl_cert_reqs", "ssl_ca_certs")
        if self.reload_dirs and not self.reload:
            raise SettingError.naming("{} needs {}", "reload_dirs", "reload")
        if self.uds and self.fd is not None:
            raise SettingError.naming("give either {} or {}, not both", "uds", "fd")
        if self.proxy_headers:
            try:
                parse_trusted(self.forwarded_allow_ips)
            except ValueError as exc:  # its message starts with "forwarded_allow_ips: "
                raise SettingError(str(exc), str(exc).replace("forwarded_allow_ips", "--forwarded-allow-ips", 1)) from None


class SettingError(ValueError):
    """A setting outside its range. ``str()`` names the keyword (``port``), for ``serve()`` and ``run()``;
    ``flag_message`` names the flag (``--port``), so the CLI reports the spelling its user typed."""

    def __init__(self, message: str, flag_message: str | None = None) -> None:
        super().__init__(message)
        self.flag_message = message if flag_message is None else flag_message

    @classmethod
    def naming(cls, template: str, *settings: str) -> SettingError:
        """``template`` with ``{}`` for each setting, filled in once with keywords and once with flags."""
        return cls(template.format(*settings), template.format(*map(flag_name, settings)))


def flag_name(setting: str) -> str:
    """The CLI flag of a ``Config`` field."""
    return "--reload-dir" if setting == "reload_dirs" else "--" + setting.replace("_", "-")


@dataclass(frozen=True)
class _Range:
    """What one setting accepts, and how to say so in a keyword's and in a flag's words."""

    kind: str  # "int", "number" (int or float, finite), "bool", "str" (non-empty), "text" (any str)
    low: float | None = None
    high: float | None = None
    above: bool = False  # > low rather than >= low
    none: str | None = None  # None allowed; then how the CLI says it ("" when by leaving the flag out)
    off: int | None = None  # the flag's value for None ("-1 for no limit"), which a keyword may give too

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none is not None
        if isinstance(value, bool) or self.kind == "bool":
            return isinstance(value, bool) and self.kind == "bool"
        if self.kind in ("str", "text"):
            return isinstance(value, str) and (self.kind == "text" or value != "")
        if not isinstance(value, int) and not (self.kind == "number" and isinstance(value, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self, cli: bool) -> str:
        noun = {"int": "an integer", "number": "a number", "bool": "True or False",
                "str": "a non-empty string", "text": "a string"}[self.kind]
        if self.low is not None and self.high is not None:
            noun += f" from {_number(self.low)} to {_number(self.high)}"
        elif self.low is not None:
            noun += f" {'>' if self.above else '>='} {_number(self.low)}"
        if self.none is not None and not cli:
            noun += f", or None or {self.none}" if self.off is not None else " or None"
        elif self.none:
            noun += f", or {self.none}"
        return noun

    def check(self, name: str, value: Any) -> None:
        if not self.accepts(value):
            raise SettingError(f"{name} must be {self.describe(cli=False)}, not {value!r}",
                               f"{flag_name(name)} must be {self.describe(cli=True)}, not {value!r}")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_COUNT = _Range("int", 1)
_SECONDS = _Range("number", 0, above=True)
_RATE = _Range("number", 0)  # bytes/s; 0 turns the check off
_PATH = _Range("str", none="")

_RANGES: dict[str, _Range] = {
    "host": _Range("text"),
    "port": _Range("int", 0, 65535),
    "uds": _PATH,
    "fd": _Range("int", 0, none=""),
    "access_log": _Range("bool"),
    "backlog": _Range("int", 1, 2**31 - 1),  # listen() takes a C int
    "accept_batch": _Range("int", 0),
    "max_body_size": _Range("int", 0, none="-1 for no limit", off=-1),
    "limit_request_line": _COUNT,
    "limit_request_fields": _COUNT,
    "limit_request_header_size": _COUNT,
    "limit_pipeline": _COUNT,
    "limit_connections": _Range("int", 1, none=""),
    "limit_in_flight": _Range("int", 1, none=""),
    "limit_chunk_extension": _COUNT,
    "limit_form_parts": _COUNT,
    "limit_form_field_size": _COUNT,
    "limit_form_file_size": _Range("int", 1, none="-1 for no limit", off=-1),
    "limit_form_part_header_size": _COUNT,
    "timeout_keep_alive": _SECONDS,
    "timeout_header": _SECONDS,
    "timeout_body": _SECONDS,
    "timeout_write": _Range("number", 0, above=True, none="0 for off", off=0),
    "timeout_graceful_shutdown": _Range("number", 0, none=""),  # None: wait for every request
    "min_request_body_rate": _RATE,
    "min_response_rate": _RATE,
    "min_rate_grace_period": _SECONDS,
    "workers": _COUNT,
    "limit_max_requests": _Range("int", 1, none=""),
    "timeout_worker_healthcheck": _SECONDS,
    "ssl_keyfile": _PATH,
    "ssl_certfile": _PATH,
    "ssl_keyfile_password": _Range("text", none=""),
    "ssl_ca_certs": _PATH,
    "ssl_ciphers": _PATH,
    "proxy_headers": _Range("bool"),
    "log_config": _PATH,
    "reload": _Range("bool"),
    "reload_delay": _SECONDS,
    "ws_max_size": _COUNT,
    "ws_ping_interval": _Range("number", 0, above=True, none="0 for off", off=0),
    "ws_ping_timeout": _Range("number", 0, above=True, none="0 for off", off=0),
    "ws_per_message_deflate": _Range("bool"),
    "deadline": _Range("number", 0, above=True, none=""),
    "metrics": _Range("str", none=""),
    "factory": _Range("bool"),
}
_OFF = {name: r.off for name, r in _RANGES.items() if r.off is not None}  # see Config.__post_init__


def _one_of(name: str, choices: tuple[Any, ...]) -> Any:
    def check(value: Any) -> None:
        if value not in choices or isinstance(value, bool):
            listed = ", ".join(repr(c) for c in choices)
            raise SettingError(f"{name} must be one of {listed}, not {value!r}",
                               f"{flag_name(name)} must be one of {listed.replace('None, ', '')}, not {value!r}")
    return check


def _check_server_header(value: Any) -> None:
    if value is None or (isinstance(value, str) and value.isprintable() and value.isascii()):
        return  # CR, LF and other controls would let the value split the response head
    raise SettingError.naming("{} must be printable ASCII text or None (no control characters), not " + repr(value),
                              "server_header")


def _check_forwarded_allow_ips(value: Any) -> None:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return  # the entries themselves are parsed by ProxyHeaders when proxy_headers is on
    raise SettingError.naming("{} must be a string or a list of strings, not " + repr(value), "forwarded_allow_ips")


def _check_reload_dirs(value: Any) -> None:
    if value is None or (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        return
    raise SettingError(f"reload_dirs must be a list of directory names or None, not {value!r}",
                       f"--reload-dir must name a directory, not {value!r}")


def _reload_dir(value: Any, settings: dict[str, Any]) -> list[str] | None:
    """``reload_dir=``: one directory or a list of them, as ``reload_dirs``."""
    if "reload_dirs" in settings:
        raise TypeError("give reload_dir or reload_dirs, not both")
    if isinstance(value, str) and value:
        value = [value]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        value = list(value)
    elif value is not None:
        raise SettingError(f"reload_dir must be a directory name, a list of them, or None, not {value!r}",
                           f"--reload-dir must name a directory, not {value!r}")
    if value and not settings.get("reload"):
        raise SettingError.naming("{} needs {}", "reload_dir", "reload")
    return value


def _check_root_path(value: Any) -> None:
    if isinstance(value, str) and (value == "" or value.startswith("/")):
        return
    raise SettingError.naming("{} must be empty or start with '/', not " + repr(value), "root_path")


_SPECIAL = {
    "loop": _one_of("loop", ("auto", "asyncio", "uvloop")),
    "log_level": _one_of("log_level", (None, *LEVELS)),
    "ssl_cert_reqs": _one_of("ssl_cert_reqs", (0, 1, 2)),
    "server_header": _check_server_header,
    "forwarded_allow_ips": _check_forwarded_allow_ips,
    "reload_dirs": _check_reload_dirs,
    "interface": _one_of("interface", ("auto", "aioserve", "asgi")),
    "lifespan": _one_of("lifespan", ("auto", "on", "off")),
    "root_path": _check_root_path,
}
