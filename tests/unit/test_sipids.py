"""A call stays findable by its SIP Call-ID after it ends, while its transactions may still
send or receive (64*T1 + T4), and no longer, so what is sent and received after the end is
on its timeline (the trace lets go of what expired at each message)."""

from __future__ import annotations

from sipbridge.calls.call import Call
from sipbridge.calls.events import CallEvents
from sipbridge.calls.sipids import SipCallIds, SipTrace
from sipbridge.sip.address import Address
from sipbridge.sip.transaction import TimerConfig
from tests.unit.callharness import OFFER, Harness, ack, invite


def a_call(n: int) -> Call:
    return Call(id=f"rtc_{n}", leg_id=f"leg{n}", caller="sip:a@b", callee="sip:c@d",
                created_at=0.0, sip_call_id=f"sip-{n}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_ended_call_is_kept_for_linger_seconds() -> None:
    clock = Clock()
    ids = SipCallIds(clock, linger=32.0, limit=10)
    call = a_call(1)
    ids["sip-1"] = call
    ids["bridge-1"] = call  # a leg the gateway dialled for the call
    ids.ended(call)
    clock.now += 31.9
    assert ids.get("sip-1") is call and ids.get("bridge-1") is call and "sip-1" in ids
    clock.now += 0.1
    assert ids.get("sip-1") is None and ids.get("bridge-1") is None and len(ids) == 0


def test_ended_calls_are_bounded_in_number_and_a_reused_call_id_is_the_new_calls() -> None:
    clock = Clock()
    ids = SipCallIds(clock, linger=32.0, limit=3)
    calls = [a_call(n) for n in range(5)]
    for call in calls:
        ids[call.sip_call_id] = call
        ids.ended(call)
    assert [ids.get(c.sip_call_id) for c in calls] == [None, None, *calls[2:]]
    again = a_call(9)
    ids["sip-4"] = again  # a new call with an ended call's Call-ID
    clock.now += 40
    assert ids.get("sip-4") is again  # the old call's expiry leaves the new one alone
    ids.ended(again)
    clock.now += 40
    assert len(ids) == 0


def test_the_manager_keeps_an_ended_call_by_its_call_id_for_64_t1_plus_t4() -> None:
    h = Harness()
    h.send(invite(OFFER.format(direction="sendrecv")))
    call = next(iter(h.manager.calls.values()))
    tag = h.sent[-1].to.tag or ""
    h.send(ack(tag))
    h.send(ack(tag).replace("ACK sip", "BYE sip").replace("1 ACK", "2 BYE"))
    assert call.state.value == "ended"
    timers = TimerConfig()
    assert h.manager.by_sip_id.get("call-1") is call  # the 200 to the BYE is traced too
    h.advance(64 * timers.t1 + timers.t4 - 0.1)
    assert h.manager.by_sip_id.get("call-1") is call  # a retransmitted BYE may still come
    h.advance(0.2)
    assert h.manager.by_sip_id.get("call-1") is None



def test_the_trace_expires_ended_call_ids_itself_before_it_looks_one_up() -> None:
    clock = Clock()
    ids = SipCallIds(clock, linger=32.0, limit=10)
    events = CallEvents()
    trace = SipTrace(ids, events)
    peer = Address("udp", "127.0.0.1", 5062)
    call = a_call(1)
    ids["sip-1"] = call
    bye = b"BYE sip:x@y SIP/2.0\r\nCall-ID: sip-1\r\nCSeq: 2 BYE\r\n\r\n"
    assert trace.trace(bye, peer, "in")
    ids.ended(call)
    clock.now += 31.9
    assert trace.trace(bye, peer, "in", early=True)  # its transactions may still send
    clock.now += 0.1
    assert not trace.trace(bye, peer, "in")  # none is asked first (get, len): trace expires
    assert [(e["kind"], e["dir"], e["line"]) for e in call.timeline] == [
        ("sip", "in", "BYE sip:x@y SIP/2.0")] * 2
    assert call.timeline[0]["text"] == bye.decode() and call.timeline[0]["peer"] == str(peer)
