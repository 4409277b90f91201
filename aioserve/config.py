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
    log_level: str = "info"
    access_log: bool = True
    server_header: str | None = "aioserve"
    backlog: int = 2048
    accept_batch: int = 64  # connections accepted per readiness of the listening socket; 0: the loop's own
    # limits
    max_body_size: int | None = 1 * MiB
    limit_pipeline: int = 32  # queued requests per connection before reading pauses (resumes at half)
    limit_in_flight: int | None = None  # past it, new requests get 503 at once (overrides App(limit_in_flight))
    # timeouts (seconds)
    timeout_keep_alive: float = 75.0
    timeout_header: float = 15.0
    timeout_body: float = 30.0
    timeout_graceful_shutdown: float | None = 30.0

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
        if self.limit_pipeline < 1:
            raise ValueError("limit_pipeline must be >= 1")
        for name in ("timeout_keep_alive", "timeout_header", "timeout_body"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
