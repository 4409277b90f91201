"""Certificates made in the test (trustme) for a server on 127.0.0.1, and a client context that trusts them."""
from __future__ import annotations

import socket
import ssl
from pathlib import Path


def make_pki(directory: Path) -> dict[str, str]:
    """A CA, and a certificate for 127.0.0.1 and localhost signed by it: {"ca", "cert", "key"} file paths."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    cert.private_key_pem.write_to_path(files["key"])
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(files["cert"], append=i > 0)
    return {name: str(path) for name, path in files.items()}


def tls_settings(pki: dict[str, str]) -> dict[str, str]:
    """The server settings that turn TLS on with ``pki``'s certificate."""
    return {"ssl_certfile": pki["cert"], "ssl_keyfile": pki["key"]}


def client_context(pki: dict[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki["ca"])


def tls_socket(pki: dict[str, str], port: int, rcvbuf: int | None = None, timeout: float = 10) -> ssl.SSLSocket:
    """A blocking TLS client socket on 127.0.0.1:``port`` (for a thread): ``rcvbuf`` set before connecting,
    so the kernel reads ahead no more than that for a slow reader."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    try:
        raw.connect(("127.0.0.1", port))
        return client_context(pki).wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
