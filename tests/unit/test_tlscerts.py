"""The test CA's certificates verify by name, and a name they do not carry fails."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from tests.tlscerts import make_ca


def _handshake(tmp_path: Path, server_name: str) -> bytes:
    ca = make_ca(tmp_path / "ca")
    cert, key = ca.issue("server", dns=("localhost",), ip=("127.0.0.1",))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(ca.cert))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.recv(2)
    finally:
        thread.join(5)
        listener.close()


def test_a_certificate_verifies_by_its_name(tmp_path: Path) -> None:
    assert _handshake(tmp_path, "localhost") == b"ok"


def test_a_name_the_certificate_does_not_carry_fails(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, "elsewhere.test")
