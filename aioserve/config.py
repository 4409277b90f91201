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

    def form_limits(self) -> Any:
        """The ``forms.FormLimits`` these settings describe (what ``request.form()`` uses by default)."""
        from .forms import FormLimits

        return FormLimits(
            max_parts=self.limit_form_parts, max_part_header_size=self.limit_form_part_header_size,
            max_field_size=self.limit_form_field_size, max_file_size=self.limit_form_file_size,
        )

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
        self.form_limits()  # raises on a form limit out of range
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
        for name in ("timeout_keep_alive", "timeout_header", "timeout_body", "timeout_worker_healthcheck", "reload_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
