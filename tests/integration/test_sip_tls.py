"""SIP over TLS (RFC 3261 26.2) with real peers and a throwaway CA.

- baresip calls the gateway's echo over TLS (``sip:echo@...;transport=tls``) and hears
  itself; the gateway's answer names the TLS port and transport in Via and Contact.
- A REFER over the TLS dialog reaches baresip over the connection baresip opened (it has
  no certificate, so nothing listens for TLS on its side): the transfer succeeds.
- Bad input on the TLS port: a client that never starts its handshake is closed after
  tls_handshake_timeout, bytes that are not TLS are closed at once, and a client
  certificate from another CA is refused when tls_verify_client is set; each is counted
  on /metrics, and a good call works after them all.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.appside import KEY, start_app
from tests.integration.gateway import Gateway
from tests.integration.interop import sip_entries
from tests.integration.peers import PHONE_RATE, Baresip, make_speech_wav, needs_phones, xcorr_delay
from tests.integration.test_transfer_e2e import (
    CALLER_SPEECH,
    HUMAN_SPEECH,
    NUMBER,
    bridged,
    call_in_background,
    finished,
)
from tests.polling import until
from tests.tlscerts import CA, make_ca

pytestmark = [
    pytest.mark.integration,
    needs_phones,
]

SPEECH = "Please hold while I connect you to the sales team."
HANDSHAKE_TIMEOUT = 1.0
FAILURES = "sipbridge_tls_handshake_failures_total"
app_side = contextlib.contextmanager(start_app)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


def tls_config(ca: CA, port: int, **extra: Any) -> dict[str, Any]:
    cert, key = ca.issue("gateway", dns=["localhost"], ip=["127.0.0.1"])
    return {"sip_tls": f"127.0.0.1:{port}", "tls_cert": str(cert), "tls_key": str(key),
            "tls_ca": str(ca.cert), "tls_handshake_timeout": HANDSHAKE_TIMEOUT, **extra}


def tls_port(gw: Gateway) -> int:
    return int(str(gw.config["sip_tls"]).rsplit(":", 1)[1])


def free_tcp_port() -> int:
    from sipbridge.demo.baresip import find_free_port

    return find_free_port("127.0.0.1", udp=False)


def echo_call(gw: Gateway, ca: CA, workdir: Path, speech: np.ndarray,
              cert: Path | None = None) -> None:
    """baresip (with `cert`, a certificate and key in one file) calls the echo over TLS
    and hears its own speech."""
    with Baresip(workdir, tls_ca=ca.cert, tls_cert=cert) as ua:
        call = ua.call(f"sip:echo@127.0.0.1:{tls_port(gw)};transport=tls", speech, 4.5)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}\n--- gateway ---\n{gw.log()[-3000:]}"
    assert call.established, context
    peak, delay = xcorr_delay(speech, call.received, PHONE_RATE)
    assert peak > 0.9, f"correlation {peak:.3f} at {delay * 1000:.0f} ms\n{context}"


@pytest.fixture
def speech(tmp_path: Path) -> np.ndarray:
    return make_speech_wav(tmp_path / "speech.wav", SPEECH)


def test_baresip_calls_the_echo_over_tls(
    start_gateway: Callable[..., Gateway], ca: CA, tmp_path: Path, speech: np.ndarray,
) -> None:
    gw = start_gateway(auto_answer="echo", **tls_config(ca, free_tcp_port()))
    echo_call(gw, ca, tmp_path / "caller", speech)
    assert gw.metric(FAILURES) == 0


def test_a_refer_over_the_tls_dialog_reaches_baresip(
    start_gateway: Callable[..., Gateway], ca: CA, tmp_path: Path, speech: np.ndarray,
) -> None:
    port = free_tcp_port()
    with (Baresip(tmp_path / "human", user=NUMBER, answermode="auto") as human,
          app_side(start_gateway, tmp_path, transfer_notify_timeout=15,
                   **tls_config(ca, port)) as app,
          Baresip(tmp_path / "caller", tls_ca=ca.cert) as caller):
        since = human.prepare(speech, 6)
        thread, result = call_in_background(
            caller, f"sip:agent@127.0.0.1:{port};transport=tls", speech, 10)
        call_id = app.incoming().data.call_id
        app.client.realtime.calls.accept(call_id, type="realtime")
        app.wait_for(call_id, lambda r: r["state"] == "active", "active")
        app.client.realtime.calls.refer(call_id, target_uri=f"sip:{NUMBER}@{human.address}")
        record = app.wait_for(call_id, lambda r: r["state"] == "ended", "ended", timeout=20)
        finished(thread, result)
        caller_log = caller.log()
        human_call = human.answered(since, 20)
    context = f"{record}\n--- caller ---\n{caller_log[-3000:]}"
    invite = sip_entries(record, direction="in", method="INVITE")[0]
    assert "SIP/2.0/TLS" in invite["text"], context
    answer = sip_entries(record, direction="out", status=200, cseq="INVITE")[0]
    assert f":{port};transport=tls>" in answer["text"], context  # our Contact: the TLS port
    refer = sip_entries(record, direction="out", method="REFER")[0]
    assert "Via: SIP/2.0/TLS" in refer["text"], context
    transfer = record["transfers"][0]
    assert (transfer["status"], transfer["sip_status"]) == ("succeeded", 200), context
    assert record["end_reason"] == "transferred"
    assert human_call.established  # baresip took the REFER and called the human


def closed_within(sock: socket.socket, seconds: float) -> float:
    """How long until the gateway closed `sock` (read gives EOF or a reset); fails if it
    is still open after `seconds`."""
    sock.settimeout(seconds)
    start = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        pytest.fail(f"the TLS port kept the connection open for {seconds} s")
    return time.monotonic() - start


def test_bad_input_on_the_tls_port_is_closed_and_counted(
    start_gateway: Callable[..., Gateway], ca: CA, tmp_path: Path, speech: np.ndarray,
) -> None:
    gw = start_gateway(auto_answer="echo", **tls_config(ca, free_tcp_port(),
                                                        tls_verify_client=True))
    port = tls_port(gw)
    # A client that connects and never says a word: closed after the handshake bound.
    with socket.create_connection(("127.0.0.1", port)) as silent:
        waited = closed_within(silent, HANDSHAKE_TIMEOUT + 3)
    assert waited >= HANDSHAKE_TIMEOUT - 0.2, f"closed after {waited:.2f} s"
    until("the silent client counted", lambda: gw.metric(FAILURES), lambda n: n == 1, 3)
    # Bytes that are not TLS: closed at once.
    with socket.create_connection(("127.0.0.1", port)) as garbage:
        garbage.sendall(b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\n\r\n" + bytes(range(256)) * 4)
        assert closed_within(garbage, 2.0) < 1.0
    until("the garbage counted", lambda: gw.metric(FAILURES), lambda n: n == 2, 3)
    # A client certificate another CA signed: refused (mutual TLS).
    other = make_ca(tmp_path / "other-ca", "another CA")
    cert, key = other.issue("intruder", ip=["127.0.0.1"], client=True)
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.load_cert_chain(cert, key)
    with (socket.create_connection(("127.0.0.1", port)) as raw,
          pytest.raises((ssl.SSLError, ConnectionResetError))):
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n")
        tls.settimeout(2)
        if not tls.recv(100):  # TLS 1.3: the refusal comes after the client's Finished
            raise ConnectionResetError("closed")
    until("the bad certificate counted", lambda: gw.metric(FAILURES), lambda n: n == 3, 3)
    log = gw.log()
    assert "TLS handshake from tls:127.0.0.1:" in log
    assert gw.process.poll() is None
    # A good call still works: baresip with a certificate from our CA.
    bundle = ca.bundle("caller", ip=["127.0.0.1"])
    echo_call(gw, ca, tmp_path / "caller", speech, cert=bundle)
    assert gw.metric(FAILURES) == 3


def test_the_bridge_fallback_dials_its_trunk_over_tls(
    start_gateway: Callable[..., Gateway], ca: CA, tmp_path: Path,
) -> None:
    """The trunk says transport = "tls": the gateway's own call to the human goes over
    TLS to baresip's TLS port, its certificate verified against tls_ca by address."""
    human_cert = ca.bundle("human", ip=["127.0.0.1"])
    with Baresip(tmp_path / "human", user=NUMBER, answermode="auto", tls_ca=ca.cert,
                 tls_cert=human_cert) as human:
        trunk = {"address": f"127.0.0.1:{human.sip_port + 1}", "transport": "tls",
                 "from_uri": "sip:gateway@127.0.0.1"}
        speech = {"caller": make_speech_wav(tmp_path / "caller.wav", CALLER_SPEECH),
                  "human": make_speech_wav(tmp_path / "human.wav", HUMAN_SPEECH)}
        with app_side(start_gateway, tmp_path, transfer_fallback="bridge", trunk=trunk,
                      **tls_config(ca, free_tcp_port())) as app:
            # Only baresip's TLS port is the trunk: the human answers only over TLS.
            bridged(app, human, speech)
            assert app.gateway.metric(FAILURES, KEY) == 0
