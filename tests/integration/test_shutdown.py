"""Stopping the gateway with calls in progress: nothing fires after the stop, and every
record reaches the store before it closes.

A call that was ringing (waiting for the application to accept it) when the gateway
stopped used to have its accept timer fire after the store had closed: the timeout
ended the call, and its record was dropped with "call store write after close ignored".
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from pathlib import Path

import pytest

from sipbridge.config import load_config
from sipbridge.gateway import Gateway
from sipbridge.store import open_store

pytestmark = pytest.mark.integration

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(port: int, local: int) -> bytes:
    tag = uuid.uuid4().hex[:8]
    return (
        f"INVITE sip:agent@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{tag};rport\r\n"
        f"From: <sip:+15550001111@127.0.0.1>;tag={tag}\r\n"
        f"To: <sip:agent@127.0.0.1>\r\n"
        f"Call-ID: {tag}@127.0.0.1\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{local}>\r\n"
        f"Max-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def test_a_ringing_call_at_shutdown_leaves_no_store_write_after_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "calls.db"
    caplog.set_level(logging.DEBUG, logger="sipbridge")

    async def main() -> None:
        # Nobody will accept: the webhook endpoint refuses, the call rings until the
        # accept timeout, which falls after the stop.
        gateway = Gateway(load_config(None, sip="127.0.0.1:0", http="off", store=str(db),
                                      webhook_url="http://127.0.0.1:9/hook",
                                      webhook_secret="whsec_dGVzdA==", accept_timeout=0.6))
        await gateway.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind(("127.0.0.1", 0))
            caller.setblocking(False)
            caller.sendto(invite(gateway.port, caller.getsockname()[1]),
                          ("127.0.0.1", gateway.port))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while gateway.calls is None or not gateway.calls.calls:
                if loop.time() > deadline:
                    raise AssertionError("the INVITE made no call within 5 s")
                await asyncio.sleep(0.01)
            await gateway.stop()
            await asyncio.sleep(1.0)  # past the accept timeout: nothing may fire now
        assert gateway.store is not None
        assert gateway.store.write_errors == 0

    asyncio.run(main())
    assert "after close" not in caplog.text, caplog.text
    with open_store(str(db)) as store:  # the ringing call's record is there
        calls = store.list_calls()
    assert len(calls) == 1, calls
