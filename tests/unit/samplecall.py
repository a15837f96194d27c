"""A recorded call with an entry of every kind (SIP, API, webhook, sideband, model,
transcript, DTMF, transfer, fallback, media): a failed transfer whose caller's display name
is a script, as the trace and the dashboard get it."""

from __future__ import annotations

from sipbridge.records import CallRecord, TimelineEntry

T0 = 1_700_000_000.0
INVITE = ("INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
          'From: "<script>alert(1)</script>" <sip:+15551230000@127.0.0.1:5070>;tag=1\r\n'
          "To: <sip:+15559870000@127.0.0.1:5060>\r\nCall-ID: abc@127.0.0.1\r\n"
          "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def sample_call() -> CallRecord:
    """A failed transfer (486) with SIP, API, webhook, sideband, model, transcript, DTMF,
    fallback, media and gateway entries; the caller's display name is a script."""
    def sip(at: float, direction: str, line: str, text: str | None = None) -> TimelineEntry:
        return {"at": T0 + at, "kind": "sip", "dir": direction, "peer": "127.0.0.1:5070",
                "line": line, "text": text or f"{line}\r\nCSeq: 1 X\r\n\r\n"}
    return {
        "id": "rtc_0123456789abcdef0123456789abcdef", "object": "realtime.call",
        "state": "ended", "created_at": T0, "answered_at": T0 + 0.4, "ended_at": T0 + 9.5,
        "end_reason": "remote_bye",
        "sip": {"call_id": "abc@127.0.0.1",
                "from": '"<script>alert(1)</script>" <sip:+15551230000@127.0.0.1>',
                "to": "sip:+15559870000@127.0.0.1:5060", "source": "127.0.0.1:5070",
                "final_status": None, "rtp_port": 40000, "codec": "PCMU", "on_hold": False},
        "media": None,
        "transfers": [{"id": "tr_1", "target_uri": "tel:+61420351258", "status": "failed",
                       "final": True, "sip_status": 486, "reason": "Busy Here",
                       "requested_at": T0 + 2.0, "steps": [], "fallback": None,
                       "requested_by": "app", "mode": "blind"}],
        "recording": None, "webhooks": [], "direction": "inbound", "outbound": None,
        "timeline": [
            sip(0.001, "in", "INVITE sip:service@127.0.0.1:5060 SIP/2.0", INVITE),
            sip(0.002, "out", "SIP/2.0 100 Trying"),
            sip(0.003, "out", "SIP/2.0 180 Ringing"),
            {"at": T0 + 0.05, "kind": "webhook", "type": "realtime.call.incoming",
             "attempt": 1, "status_code": 200, "error": None, "duration_ms": 3.1},
            {"at": T0 + 0.06, "kind": "webhook", "type": "realtime.call.incoming",
             "attempt": 2, "status_code": None, "error": "connection refused",
             "duration_ms": 1.0},
            {"at": T0 + 0.3, "kind": "api", "action": "accept", "model": "gpt-realtime"},
            sip(0.4, "out", "SIP/2.0 200 OK"),
            sip(0.41, "in", "ACK sip:service@127.0.0.1:5060 SIP/2.0"),
            {"at": T0 + 0.5, "kind": "sideband", "status": "connected", "client": "127.0.0.1:1"},
            {"at": T0 + 0.6, "kind": "sideband", "status": "client_event",
             "event": "session.update", "error": "invalid_value"},
            {"at": T0 + 0.7, "kind": "agent", "status": "connected", "detail": "ws://x"},
            {"at": T0 + 1.0, "kind": "transcript", "role": "agent",
             "text": "Hello, how can I help?"},
            {"at": T0 + 1.5, "kind": "transcript", "role": "caller",
             "text": "Put me through to <b>sales</b> & co."},
            {"at": T0 + 1.9, "kind": "dtmf", "digit": "5", "duration_ms": 160},
            {"at": T0 + 2.0, "kind": "api", "action": "refer", "target": "tel:+61420351258"},
            {"at": T0 + 2.0, "kind": "transfer", "transfer_id": "tr_1", "status": "requested",
             "sip_status": None, "reason": None, "final": False},
            sip(2.01, "out", "REFER sip:carrier@127.0.0.1:5070;transport=UDP;"
                             "with-a-long-parameter=1 SIP/2.0"),
            sip(2.02, "in", "SIP/2.0 202 Accepted"),
            {"at": T0 + 2.02, "kind": "transfer", "transfer_id": "tr_1", "status": "accepted",
             "sip_status": 202, "reason": "Accepted", "final": False},
            sip(2.1, "in", "NOTIFY sip:service@127.0.0.1:5060 SIP/2.0"),
            sip(2.11, "out", "SIP/2.0 200 OK"),
            sip(2.3, "in", "NOTIFY sip:service@127.0.0.1:5060 SIP/2.0"),
            sip(2.31, "out", "SIP/2.0 200 OK"),
            {"at": T0 + 2.3, "kind": "transfer", "transfer_id": "tr_1", "status": "failed",
             "sip_status": 486, "reason": "Busy Here", "final": True},
            {"at": T0 + 2.31, "kind": "fallback", "transfer_id": "tr_1", "mode": "announce",
             "status": "failed"},
            {"at": T0 + 3.0, "kind": "agent", "status": "dropped", "detail": "closed"},
            sip(5.0, "in", "SIP/2.0 486 Busy Here"),
            sip(5.1, "in", "SIP/2.0 401 Unauthorized"),
            sip(9.4, "in", "BYE sip:service@127.0.0.1:5060 SIP/2.0"),
            sip(9.41, "out", "SIP/2.0 200 OK"),
            {"at": T0 + 9.5, "kind": "media", "packets_in": 400, "packets_out": 410, "lost": 0},
            {"at": T0 + 9.5, "kind": "call", "status": "ended", "reason": "remote_bye"},
            {"at": T0 + 9.6, "kind": "gateway", "status": "stopping"},
        ],
    }
