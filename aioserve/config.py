"""Every server setting in one place: the CLI flags, ``serve()`` and ``app.run()`` keywords map here 1:1."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


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
    # timeouts (seconds)
    timeout_keep_alive: float = 75.0
    timeout_header: float = 15.0
    timeout_body: float = 30.0
    timeout_write: float | None = 30.0
    timeout_graceful_shutdown: float | None = 30.0
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

    @classmethod
    def from_settings(cls, **settings: Any) -> Config:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        config = cls(**settings)
        config.validate()
        return config

    def validate(self) -> None:
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"loop must be auto, asyncio or uvloop, not {self.loop!r}")
        if self.max_body_size is not None and self.max_body_size < 0:
            raise ValueError("max_body_size must be >= 0 or None")
        if self.accept_batch < 0:
            raise ValueError("accept_batch must be >= 0")
        if self.limit_in_flight is not None and self.limit_in_flight < 1:
            raise ValueError("limit_in_flight must be >= 1")
        for name in ("limit_pipeline", "limit_request_line", "limit_request_fields", "limit_request_header_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.limit_connections is not None and self.limit_connections < 1:
            raise ValueError("limit_connections must be >= 1 or None")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.limit_max_requests is not None and self.limit_max_requests < 1:
            raise ValueError("limit_max_requests must be >= 1 or None")
        if self.reload and self.workers > 1:
            raise ValueError("--reload cannot be combined with --workers > 1 (reload runs one process)")
        if bool(self.ssl_keyfile) != bool(self.ssl_certfile):
            raise ValueError("TLS needs both ssl_keyfile and ssl_certfile")
        if self.ssl_cert_reqs not in (0, 1, 2):
            raise ValueError("ssl_cert_reqs must be 0 (none), 1 (optional) or 2 (required)")
        if self.proxy_headers:
            from .proxy import ProxyHeaders

            ProxyHeaders(self.forwarded_allow_ips)  # raises on an entry that is not an address
        if self.uds and self.fd is not None:
            raise ValueError("give either uds or fd, not both")
        if self.ws_max_size < 1:
            raise ValueError("ws_max_size must be >= 1")
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 or None")
        for name in ("timeout_keep_alive", "timeout_header", "timeout_body", "timeout_worker_healthcheck", "reload_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
