"""TLS: one ``ssl.SSLContext`` built from the ``ssl_*`` settings (uvicorn's names).

Built once per process that serves (each worker builds its own after ``fork``), and once up front by
the supervisor, so a wrong path or password is one clear error before any worker starts.
"""
from __future__ import annotations

import os
import ssl

from .config import Config


class TLSConfigError(ValueError):
    """The certificate, key, password or CA file cannot be used; the message says which."""


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server context for ``config``, or ``None`` when TLS is off."""
    if not config.ssl_certfile:
        return None
    for path in (config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certs):
        if path and not os.path.isfile(path):
            raise TLSConfigError(f"TLS file not found: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    try:
        ctx.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password=config.ssl_keyfile_password)
    except ssl.SSLError as exc:
        hint = " (wrong or missing --ssl-keyfile-password?)" if "PEM" in str(exc) or "bad decrypt" in str(exc) else ""
        raise TLSConfigError(
            f"cannot load TLS certificate {config.ssl_certfile} / key {config.ssl_keyfile}: {exc.reason or exc}{hint}"
        ) from None
    ctx.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ca_certs:
        try:
            ctx.load_verify_locations(config.ssl_ca_certs)
        except (FileNotFoundError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load CA certificates {config.ssl_ca_certs}: {exc}") from None
    if config.ssl_ciphers:
        try:
            ctx.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise TLSConfigError(f"no usable cipher in {config.ssl_ciphers!r}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
