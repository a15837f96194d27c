"""An OPTIONS probe on loopback: whether a SIP listener answers, and with what.

Everything in the integration tests runs on ``LOOPBACK``."""

from __future__ import annotations

import socket
import time
import uuid

LOOPBACK = "127.0.0.1"


def options_request(host: str, port: int, local: tuple[str, int]) -> bytes:
    """An out-of-dialog OPTIONS (RFC 3261 11) from ``local`` over UDP."""
    branch = "z9hG4bK" + uuid.uuid4().hex
    lhost, lport = local
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@{lhost}>;tag={uuid.uuid4().hex[:10]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@{lhost}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Accept: application/sdp\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def send_options(host: str, port: int, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS over UDP; the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        s.sendto(options_request(host, port, s.getsockname()), (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            if line.startswith("SIP/2.0 ") and not line.startswith("SIP/2.0 1"):
                return line
    return None
