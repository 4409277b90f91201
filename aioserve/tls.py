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


class _NoPassword(Exception):
    """Raised from the password callback: the key is encrypted and no password was given."""


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
    asked = False

    def password() -> str:
        # Always a callable: with password=None OpenSSL would prompt on the terminal (or fail oddly
        # without one). Called only when the key is encrypted.
        nonlocal asked
        asked = True
        if config.ssl_keyfile_password is None:
            raise _NoPassword
        return config.ssl_keyfile_password

    key = config.ssl_keyfile or config.ssl_certfile
    try:
        ctx.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password=password)
    except _NoPassword:
        raise TLSConfigError(
            f"TLS key {key} is encrypted: give its password with --ssl-keyfile-password (ssl_keyfile_password=)"
        ) from None
    except (ssl.SSLError, OSError, ValueError) as exc:  # ValueError: a password over 1024 bytes
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or exc
        else:
            reason = getattr(exc, "strerror", None) or exc
        hint = " (wrong --ssl-keyfile-password?)" if asked and ("PEM" in str(exc) or "decrypt" in str(exc)) else ""
        raise TLSConfigError(
            f"cannot load TLS certificate {config.ssl_certfile} / key {key}: {reason}{hint}"
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
