"""A caller's media, played from the test: SIPp places the call (its SDP names this
socket), and this sends the caller's PCMU on a 20 ms grid from the same socket and
keeps every packet that comes back with its arrival time, so that what the caller
says and hears can be timed against each other on one clock (time.monotonic)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np

from sipbridge.media.g711 import ulaw_encode
from tests.integration.callrecords import api_get
from tests.integration.gateway import Gateway
from tests.integration.peers import RtpSink
from tests.integration.sipp import SCENARIOS, SippResult, run_sipp
from tests.polling import until

FRAME = 160  # 20 ms at 8 kHz
SILENCE = 0xFF  # PCMU for 0


def voiced(sink: RtpSink, start: float = 0.0, end: float = float("inf")) -> list[float]:
    """Arrival times, within [start, end), of the packets that carried sound."""
    return [p.arrival for p in sink.packets if start <= p.arrival < end
            and p.payload_type == 0 and any(b not in (SILENCE, 0x7F) for b in p.payload)]


class RtpCaller:
    """One call: SIPp's signalling (``uac_listen.xml``) and the caller's RTP from here."""

    def __init__(self, gateway: Gateway, workdir: Path, hold_ms: int, api_key: str, *,
                 telephone_event: int | None = None) -> None:
        self.gateway = gateway
        self.telephone_event = telephone_event  # offered as this payload type (RFC 4733)
        self.sink = RtpSink()
        self.api_key = api_key
        self.workdir = workdir
        self.hold_ms = hold_ms
        self.result: SippResult | None = None
        self._sipp = threading.Thread(target=self._place, daemon=True)
        self.sent: list[tuple[float, bool]] = []  # (send time, speech?) per frame
        self.call: dict[str, Any] = {}

    def __enter__(self) -> Self:
        self.sink.__enter__()
        self._sipp.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sipp.join(self.hold_ms / 1000 + 30)
        self.sink.__exit__(None, None, None)

    def _place(self) -> None:
        text = (SCENARIOS / "uac_listen.xml").read_text()
        pt = self.telephone_event
        if pt is not None:
            text = text.replace("RTP/AVP 0\n", f"RTP/AVP 0 {pt}\n").replace(
                "a=rtpmap:0 PCMU/8000\n", f"a=rtpmap:0 PCMU/8000\na=rtpmap:{pt} "
                f"telephone-event/8000\na=fmtp:{pt} 0-16\n")
        path = self.workdir / "listen.xml"
        path.write_text(text.replace("__RTP_PORT__", str(self.sink.port))
                        .replace("__HOLD__", str(self.hold_ms)))
        self.result = run_sipp(self.gateway.address, path, self.workdir / "sipp", timeout=60)

    def answered(self, timeout: float = 10) -> dict[str, Any]:
        """The gateway's record of this call once it is up (its RTP port included): the
        active call whose INVITE offered this caller's RTP port (others may be up too)."""
        base = f"http://127.0.0.1:{self.gateway.http_port}/v1"
        offer = f"m=audio {self.sink.port} ".encode()
        others: set[str] = set()  # active calls whose INVITE offered another port

        def ours() -> list[dict[str, Any]]:
            calls = api_get(base, self.api_key, "/realtime/calls")["data"]
            if len(calls) == 1:  # the only call (as in most tests): no need to look
                only = calls[0]
                return [only] if only["state"] == "active" and only["sip"]["rtp_port"] else []
            found = []
            for call in calls:
                if (call["state"] != "active" or not call["sip"]["rtp_port"]
                        or call["id"] in others):
                    continue
                record = api_get(base, self.api_key, f"/realtime/calls/{call['id']}")
                if any(offer in str(e.get("text", "")).encode() for e in record["timeline"]
                       if e.get("kind") == "sip"):
                    found.append(call)
                else:
                    others.add(call["id"])
            return found

        calls = until("the gateway answering this call with an RTP port", ours, bool,
                      timeout, interval=0.02)
        self.call = calls[0]
        return self.call

    def speak(self, pcm8: np.ndarray, *, lead_s: float, tail_s: float,
              on_frame: Callable[[int], None] | None = None,
              dest: tuple[str, int] | None = None) -> tuple[float, float]:
        """Send `lead_s` of silence, the speech, then `tail_s` of silence, paced, to the
        gateway's RTP port (or to `dest`, a relay in front of it); returns when the
        speech's first and last frames were sent."""
        if dest is None:
            dest = ("127.0.0.1", int(self.call["sip"]["rtp_port"]))
        lead, tail = int(lead_s * 50), int(tail_s * 50)
        speech = np.concatenate([pcm8, np.zeros(-len(pcm8) % FRAME, np.int16)])
        frames = ([np.zeros(FRAME, np.int16)] * lead
                  + list(speech.reshape(-1, FRAME)) + [np.zeros(FRAME, np.int16)] * tail)
        t0 = time.monotonic()
        first = last = 0.0
        for k, frame in enumerate(frames):
            due = t0 + k * 0.020
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            header = bytes([0x80, 0]) + (k & 0xFFFF).to_bytes(2, "big") \
                + (k * FRAME).to_bytes(4, "big") + (0x5151).to_bytes(4, "big")
            self.sink.sock.sendto(header + ulaw_encode(frame), dest)
            now = time.monotonic()
            is_speech = lead <= k < len(frames) - tail
            self.sent.append((now, is_speech))
            if is_speech and not first:
                first = now
            if is_speech:
                last = now
            if on_frame is not None:
                on_frame(k)
        return first, last
