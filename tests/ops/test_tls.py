"""TLS with certificates made in the test (trustme) and clients that verify them."""
from __future__ import annotations

import ssl

import httpx2
import pytest

import aioserve
from tests.support import ServerProcess

trustme = pytest.importorskip("trustme", reason="TLS tests need trustme (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem", "enc_key": d / "enc_key.pem",
             "client": d / "client.pem"}
    ca.cert_pem.write_to_path(files["ca"])
    cert.private_key_pem.write_to_path(files["key"])
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(files["cert"], append=i > 0)
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    files["enc_key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    ca.issue_cert("client@example.test").private_key_and_cert_chain_pem.write_to_path(files["client"])
    return {k: str(v) for k, v in files.items()}


def client_context(pki, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca"])
    if client_cert:
        ctx.load_cert_chain(pki["client"])
    return ctx


async def test_https_with_a_verifying_client(pki):
    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, port=0, ssl_certfile=pki["cert"], ssl_keyfile=pki["key"])
    try:
        assert server.url.startswith("https://")
        async with httpx2.AsyncClient(verify=client_context(pki)) as client:
            resp = await client.get(f"https://127.0.0.1:{server.port}/whoami")
            assert resp.status_code == 200 and resp.json()["scheme"] == "https"
        async with httpx2.AsyncClient(verify=ssl.create_default_context()) as client:  # does not know our CA
            with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{server.port}/")
    finally:
        await server.shutdown(timeout=5)


def test_cli_tls_with_encrypted_key_and_workers(pki):
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--workers", "2", "--ssl-certfile", pki["cert"],
                       "--ssl-keyfile", pki["enc_key"], "--ssl-keyfile-password", "s3cret") as server:
        server.wait_listening()
        assert "Listening on https://127.0.0.1:" in server.output
        with httpx2.Client(verify=client_context(pki)) as client:
            pids = {client.get(f"https://localhost:{server.port}/", headers={"Connection": "close"}).json()["pid"]
                    for _ in range(100)}
            assert pids <= set(server.worker_pids())


@pytest.mark.parametrize("flags,needle", [
    (["--ssl-keyfile-password", "wrong"], "cannot load TLS certificate"),
    (["--ssl-ciphers", "NO-SUCH-CIPHER"], "no usable cipher"),
])
def test_cli_tls_errors_are_one_line(pki, flags, needle):
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--ssl-certfile", pki["cert"],
                       "--ssl-keyfile", pki["enc_key"] if "--ssl-keyfile-password" in flags else pki["key"],
                       *flags) as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert server.lines[:-1] == [server.lines[0]] and server.lines[0].startswith("aioserve: error:")
        assert needle in server.lines[0]


def test_cli_tls_missing_file_is_one_line(pki):
    with ServerProcess("tests.support.apps:ops_app", "--ssl-certfile", "/nonexistent.pem", "--ssl-keyfile", pki["key"]) as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert server.lines[:-1] == ["aioserve: error: TLS file not found: /nonexistent.pem"]


async def test_client_certificates_required(pki):
    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, port=0, ssl_certfile=pki["cert"], ssl_keyfile=pki["key"],
                                  ssl_ca_certs=pki["ca"], ssl_cert_reqs=ssl.CERT_REQUIRED)
    url = f"https://127.0.0.1:{server.port}/whoami"
    try:
        async with httpx2.AsyncClient(verify=client_context(pki, client_cert=True)) as client:
            assert (await client.get(url)).status_code == 200
        async with httpx2.AsyncClient(verify=client_context(pki)) as client:
            with pytest.raises((httpx2.ConnectError, httpx2.ReadError, httpx2.RemoteProtocolError)):
                await client.get(url)
    finally:
        await server.shutdown(timeout=5)


async def test_ciphers_restrict_tls12_negotiation(pki):
    from tests.support.apps import ops_app as app

    wanted = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    server = await aioserve.serve(app, port=0, ssl_certfile=pki["cert"], ssl_keyfile=pki["key"], ssl_ciphers=wanted)
    try:
        import asyncio

        ctx = client_context(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # cipher strings govern TLS 1.2; 1.3 suites are fixed
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="localhost")
        cipher = writer.get_extra_info("cipher")[0]
        writer.close()
        await writer.wait_closed()
        assert cipher in wanted.split(":")
    finally:
        await server.shutdown(timeout=5)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_shutdown_does_not_wait_for_an_idle_clients_close_notify(pki, loop):
    """A client holding an idle keep-alive TLS connection (a pooled client) never answers the server's
    close_notify; graceful shutdown must not wait the loop's 30 s default for it."""
    import signal
    import socket
    import time

    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--loop", loop, "--ssl-certfile", pki["cert"],
                       "--ssl-keyfile", pki["key"], "--no-access-log") as server:
        server.wait_listening()
        raw = socket.create_connection((server.host, server.port), timeout=10)
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200")  # answered; the connection stays open, idle
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait_exit(timeout=40) == 0
            took = time.monotonic() - started
        assert took < 10, f"shutdown took {took:.1f}s with one idle TLS connection"
        assert "timed out" not in server.output


def test_encrypted_key_without_password_is_one_line_and_never_prompts(pki):
    with ServerProcess("tests.support.apps:ops_app", "--port", "0", "--ssl-certfile", pki["cert"],
                       "--ssl-keyfile", pki["enc_key"]) as server:
        assert server.wait_exit() != 0
        server.wait_for("<EOF>")
        assert len(server.lines) == 2, server.output  # one line, then <EOF>: no prompt, no traceback
        line = server.lines[0]
        assert line.startswith("aioserve: error:") and pki["enc_key"] in line and "--ssl-keyfile-password" in line
        assert server.stdout == b""


async def test_encrypted_key_without_password_programmatic(pki):
    from tests.support.apps import ops_app as app

    from aioserve.tls import TLSConfigError

    with pytest.raises(TLSConfigError, match="ssl-keyfile-password") as info:
        await aioserve.serve(app, port=0, ssl_certfile=pki["cert"], ssl_keyfile=pki["enc_key"])
    assert pki["enc_key"] in str(info.value)


async def test_a_client_that_never_completes_the_tls_handshake_is_cut_at_the_header_timeout(pki):
    """Over TLS the protocol sees a connection only once its handshake is done: a client that opens a
    socket and sends nothing must not hold it for the loop's 60 s handshake default, but for
    timeout_header, as on plain HTTP."""
    import asyncio
    import time

    async def silent_client(port: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server, nothing sent
        finally:
            writer.close()
        return time.monotonic() - started

    from tests.support.apps import ops_app as app

    server = await aioserve.serve(app, port=0, ssl_certfile=pki["cert"], ssl_keyfile=pki["key"],
                                  timeout_header=0.5)
    try:
        took = await silent_client(server.port)
    finally:
        await server.shutdown(timeout=5)
    assert took < 5, f"a silent TLS client held its socket {took:.1f}s"
