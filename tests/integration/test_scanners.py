"""What the internet sends a SIP port: scanners (SIPVicious) and floods from strangers.

Each gets a clear answer or nothing, creates no call, and the gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Callable

import pytest

from sipbridge.config import load_config
from sipbridge.gateway import Gateway
from tests.integration.gateway import Gateway as GatewayProcess

pytestmark = pytest.mark.integration

needs_sipvicious = pytest.mark.skipif(
    shutil.which("svwar") is None, reason="sipvicious is not installed (scripts/setup.sh does)"
)


def run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


@needs_sipvicious
def test_svmap_finds_the_gateway_by_options(start_gateway: Callable[..., GatewayProcess]) -> None:
    gw = start_gateway()
    out = run(["svmap", gw.host, "-p", str(gw.port)])
    assert f"{gw.host}:{gw.port}" in out and "sipbridge" in out


@needs_sipvicious
@pytest.mark.parametrize("method", ["INVITE", "REGISTER", "OPTIONS"])
def test_svwar_extension_scan_from_a_stranger_finds_nothing(
    start_gateway: Callable[..., GatewayProcess], method: str
) -> None:
    """127.0.0.1 is outside the allow-list: every probe is refused, no call is made."""
    gw = start_gateway(allow=["127.0.0.2/32"], auto_answer="silence")
    out = run(["svwar", "-e100-160", "-m", method, gw.host, "-p", str(gw.port)])
    assert "found nothing" in out or "method not allowed" in out, out
    assert gw.process.poll() is None
    assert "call rtc_" not in gw.log()  # not one call was created
    # An allowed source is still served.
    assert gw.options(timeout=2.0) is not None


@needs_sipvicious
def test_svcrack_gets_no_password_out(start_gateway: Callable[..., GatewayProcess]) -> None:
    gw = start_gateway(allow=["127.0.0.2/32"], auth={"realm": "gw", "users": {"100": "s3cr3t!x"},
                                                     "algorithms": ["MD5"]})
    out = run(["svcrack", "-u100", "-r1-2000", gw.host, "-p", str(gw.port)])
    assert "s3cr3t!x" not in out
    assert "found nothing" in out, out  # REGISTER is answered 405: nothing to guess against
    assert gw.process.poll() is None


def test_invite_flood_from_a_stranger_leaves_no_state() -> None:
    """10,000 INVITEs from outside the allow-list: each a 403, nothing kept, memory flat."""

    async def main() -> None:
        # The rate limit off: it would drop all but the first 60 (test_rate_limit.py).
        gw = Gateway(load_config(None, sip="127.0.0.1:0", http="off", store="off",
                                 allow=["127.0.0.2/32"],
                                 auto_answer="silence", rate_limit={"enabled": False}))
        await gw.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        answers: dict[int, int] = {}
        try:
            for i in range(10_000):
                invite = (
                    f"INVITE sip:{i}@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKflood{i};rport\r\n"
                    f"From: <sip:scanner@127.0.0.1>;tag=f{i}\r\nTo: <sip:{i}@127.0.0.1>\r\n"
                    f"Call-ID: flood-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:s@127.0.0.1:{port}>\r\n"
                    f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode()
                await loop.sock_sendto(sock, invite, ("127.0.0.1", gw.port))
                if i % 50 == 0:
                    await asyncio.sleep(0.01)  # let the gateway keep up
                try:
                    while True:
                        data = sock.recv(65535)
                        status = int(data.split(b" ", 2)[1])
                        answers[status] = answers.get(status, 0) + 1
                except BlockingIOError:
                    pass
            deadline = loop.time() + 5
            while sum(answers.values()) < 10_000 and loop.time() < deadline:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.5)
                except TimeoutError:
                    continue
                status = int(data.split(b" ", 2)[1])
                answers[status] = answers.get(status, 0) + 1
            assert gw.ua is not None and gw.calls is not None
            assert set(answers) == {403}
            received = gw.ua.stats["received"]
            assert received >= 9_000  # loopback UDP may drop some of a burst
            assert answers[403] == gw.ua.stats["refused_403"] == received
            held = gw.ua.held
            assert held["server_transactions"] == held["legs"] == held["dialogs"] == 0
            assert gw.calls.calls == {}
        finally:
            sock.close()
            await gw.stop()

    asyncio.run(main())
