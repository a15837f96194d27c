"""The compiled SIP plane (setup.py: mypyc) against its Python source, on the same input:
every message of the malformed corpus parsed, validated and answered, SDP offers answered,
and calls through the UA core (answered, cancelled, refused, OPTIONS), each side in a
process of its own; the two transcripts must be the same, byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

OFFERS = [
    b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=ptime:20\r\n",
    b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 8\r\na=sendonly\r\n",
    b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
    b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=video 6002 RTP/AVP 96\r\n",
    b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VuZGVyKQ==\r\n",
    b"v=0\r\nm=audio x RTP/AVP 0\r\n",
]


def _invite(n: int, method: str = "INVITE", cseq: int = 1, to_tag: str = "",
            body: bytes = b"") -> bytes:
    to = "<sip:agent@192.0.2.9>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} sip:agent@192.0.2.9 SIP/2.0",
             f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-{n}-{method};rport",
             f"From: <sip:+15550100@192.0.2.1>;tag=f{n}", f"To: {to}",
             f"Call-ID: call-{n}@192.0.2.1", f"CSeq: {cseq} {method}",
             "Contact: <sip:+15550100@192.0.2.1:5060>", "Max-Forwards: 70"]
    if body:
        lines.append("Content-Type: application/sdp")
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__} {getattr(exc, 'status', '')} {exc}"


def _messages(lines: list[str]) -> None:
    """The corpus: each message parsed, its views, validated, answered, serialised."""
    from sipbridge.sip.errors import SipError
    from sipbridge.sip.message import Request, parse_message, response_to
    from tests.unit.corpus import CORPUS

    for entry in CORPUS:
        try:
            msg = parse_message(entry.data)
        except SipError as exc:
            lines.append(f"{entry.name}: {_error(exc)}")
            continue
        views = []
        for view in ("vias", "from_", "to", "call_id", "cseq", "contacts", "record_routes",
                     "max_forwards"):
            try:
                views.append(repr(getattr(msg, view)))
            except SipError as exc:
                views.append(_error(exc))
            except AttributeError:
                views.append("-")
        lines.append(f"{entry.name}: {msg!r} {msg.headers._items!r} {views}")
        if isinstance(msg, Request):
            status = 200
            try:
                msg.validate()
            except SipError as exc:
                status = exc.status
                lines.append(f"  {_error(exc)}")
            lines.append(repr(response_to(msg, status, to_tag="t1").to_bytes()))
        lines.append(repr(msg.to_bytes()))


def _offers(lines: list[str]) -> None:
    from sipbridge.sip.errors import SipError
    from sipbridge.sip.sdp import answer_offer, parse_sdp

    for n, offer in enumerate(OFFERS):
        try:
            answer, negotiated = answer_offer(parse_sdp(offer), local_address="203.0.113.5",
                                              local_port=40000 + 2 * n, session_id=n,
                                              session_version=1)
            lines.append(f"offer {n}: {answer.to_bytes()!r} {negotiated!r}")
        except SipError as exc:
            lines.append(f"offer {n}: {_error(exc)}")


def _calls(lines: list[str]) -> None:
    """Calls through the UA core, its tokens counted rather than random."""
    from sipbridge.sip.access import AccessGuard
    from sipbridge.sip.address import Address
    from sipbridge.sip.events import IncomingCall
    from sipbridge.sip.ua import UaConfig, UserAgent

    counter = iter(range(10**6))
    ua = UserAgent(UaConfig(), AccessGuard(["192.0.2.0/24"]),
                   token=lambda: f"tok{next(counter)}")
    source = Address("udp", "192.0.2.1", 5060)
    incoming: list[IncomingCall] = []
    now = 1000.0

    def sent() -> None:
        for out, dest in ua.outgoing():
            lines.append(f"to {dest}: {out!r}")

    def step(data: bytes, src: Address = source) -> None:
        ua.receive(data, src, now)
        for event in ua.events():
            lines.append(f"event {type(event).__name__} {getattr(event, 'leg_id', '')}")
            if isinstance(event, IncomingCall):
                incoming.append(event)
        sent()

    step(_invite(1, body=OFFERS[0]))  # answered, then hung up by the caller
    leg = incoming[-1].leg_id
    ua.ring(leg, now)
    ua.answer(leg, OFFERS[0], now)
    step(_invite(1, "ACK", to_tag=leg))
    step(_invite(1, "BYE", cseq=2, to_tag=leg))
    step(_invite(2, body=OFFERS[1]))  # cancelled while it rings
    step(_invite(2, "CANCEL"))
    step(_invite(3))  # refused
    ua.reject(incoming[-1].leg_id, 486, now)
    sent()
    step(_invite(3, "ACK"))
    step(_invite(4, "OPTIONS"))
    step(_invite(5), Address("udp", "198.51.100.7", 5060))  # not an allowed source
    now += 64.0
    ua.handle_timer(now)
    sent()
    lines.append(f"held {sorted(ua.held.items())!r} stats {sorted(ua.stats.items())!r}")


def transcript() -> dict[str, object]:
    """What this process's SIP plane makes of the input (see the module docstring)."""
    from sipbridge import _compiled

    lines: list[str] = []
    _messages(lines)
    _offers(lines)
    _calls(lines)
    return {"compiled": _compiled.compiled(), "lines": lines}


def _run(pure: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "SIPBRIDGE_PURE_PYTHON"}
    if pure:
        env["SIPBRIDGE_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", "import json; from tests.unit.test_compiled_sip import "
         "transcript; print(json.dumps(transcript()))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_compiled_sip_plane_says_what_its_source_says() -> None:
    compiled, pure = _run(pure=False), _run(pure=True)
    assert pure["compiled"] is False
    if not compiled["compiled"]:
        pytest.skip("the SIP modules are not compiled here (no mypyc at install)")
    a, b = compiled["lines"], pure["lines"]
    assert isinstance(a, list) and isinstance(b, list)
    assert len(a) > 200 and any("to udp:192.0.2.1:5060" in x for x in a)
    assert [x for x in a if x not in b] == [] and a == b


def test_an_edited_source_runs_instead_of_its_stale_compiled_module(tmp_path: Path) -> None:
    """A compiled module whose source changed after the build is not used: all of the
    compiled modules then run from source, and WHY_PURE says which file changed."""
    from sipbridge import _compiled

    src = tmp_path / "src"
    for name in (*_compiled.MODULES, "sipbridge._compiled"):
        path = src / _compiled.source_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((ROOT / "src" / _compiled.source_path(name)).read_bytes())
    for package in ("sipbridge", "sipbridge/sip", "sipbridge/calls"):
        (src / package / "__init__.py").touch()
    (src / "sipbridge" / "__init__.py").write_text(
        "from sipbridge import _compiled\n_compiled.install()\n")
    manifest = json.loads((ROOT / "src" / _compiled.MANIFEST).read_text()) if (
        ROOT / "src" / _compiled.MANIFEST).exists() else {}
    if not manifest:
        pytest.skip("the SIP modules are not compiled here (no manifest)")
    (src / _compiled.MANIFEST).write_text(json.dumps(manifest))
    probe = "import sipbridge._compiled as c; print(repr(c.WHY_PURE))"
    env = {**{k: v for k, v in os.environ.items() if k != "SIPBRIDGE_PURE_PYTHON"},
           "PYTHONPATH": str(src)}

    def why() -> str:
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              text=True, check=True, timeout=60).stdout.strip()

    assert why() == "''"  # the sources as built
    (src / "sipbridge/sip/uri.py").write_text(
        (src / "sipbridge/sip/uri.py").read_text() + "\n# edited\n")
    assert "sipbridge/sip/uri.py changed since it was compiled" in why()
