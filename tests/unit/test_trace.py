"""`sipbridge.trace`: the ladder's rows (`steps`) and the text ladder drawn from them. The
text must not change: `sipbridge trace` users and tests read it."""

from __future__ import annotations

from typing import cast

from sipbridge.records import CallRecord
from sipbridge.trace import Step, calls_table, ladder, steps, summarize
from tests.unit.samplecall import INVITE, T0, sample_call

# What `sipbridge trace` prints for sample_call().
LADDER = """\
call rtc_0123456789abcdef0123456789abcdef  "<script>alert(1)</script>" <sip:+15551230000@127.0.0.1> -> sip:+15559870000@127.0.0.1:5060  state ended  end remote_bye

   +0.001s  carrier  INVITE sip:service@127.0.0.1:5060 SIP... -> sipbridge
   +0.002s  carrier <------------ SIP/2.0 100 Trying ----------- sipbridge
   +0.003s  carrier <----------- SIP/2.0 180 Ringing ----------- sipbridge
   +0.050s                                                       sipbridge ----- realtime.call.incoming #1: 200 ------> app
   +0.060s                                                       sipbridge  realtime.call.incoming #2: connection... -> app   <== FAILED
   +0.300s                                                       sipbridge <-------- accept model=gpt-realtime -------- app
   +0.400s  carrier <-------------- SIP/2.0 200 OK ------------- sipbridge
   +0.410s  carrier - ACK sip:service@127.0.0.1:5060 SIP/2.0 --> sipbridge
   +0.500s                                                       sipbridge <------------ sideband connected ----------- app
   +0.600s                                                       sipbridge <--- sideband client_event session.update -- app   <== FAILED
   +0.700s                                                       sipbridge ------------ model connected --------------> model
   +1.000s                                                       model: agent said "Hello, how can I help?"
   +1.500s                                                       model: caller said "Put me through to <b>sales</b> & co."
   +1.900s                                                       sipbridge: dtmf digit=5 duration_ms=160
   +2.000s                                                       sipbridge <------ refer target=tel:+61420351258 ------ app
   +2.000s                                                       sipbridge: transfer requested
   +2.010s  carrier <- REFER sip:carrier@127.0.0.1:5070;tran...  sipbridge
   +2.020s  carrier ---------- SIP/2.0 202 Accepted -----------> sipbridge
   +2.020s                                                       sipbridge: transfer accepted 202 (Accepted)
   +2.100s  carrier  NOTIFY sip:service@127.0.0.1:5060 SIP... -> sipbridge
   +2.110s  carrier <-------------- SIP/2.0 200 OK ------------- sipbridge
   +2.300s  carrier  NOTIFY sip:service@127.0.0.1:5060 SIP... -> sipbridge
   +2.310s  carrier <-------------- SIP/2.0 200 OK ------------- sipbridge
   +2.300s                                                       sipbridge: transfer failed 486 (Busy Here)   <== FAILED
   +2.310s                                                       sipbridge: fallback announce failed   <== FAILED
   +3.000s                                                       sipbridge ------------- model dropped ---------------> model   <== FAILED
   +5.000s  carrier --------- SIP/2.0 486 Busy Here -----------> sipbridge   <== FAILED
   +5.100s  carrier -------- SIP/2.0 401 Unauthorized ---------> sipbridge
   +9.400s  carrier - BYE sip:service@127.0.0.1:5060 SIP/2.0 --> sipbridge
   +9.410s  carrier <-------------- SIP/2.0 200 OK ------------- sipbridge
   +9.500s                                                       sipbridge: media packets_in=400 packets_out=410 lost=0
   +9.500s                                                       sipbridge: call status=ended reason=remote_bye
   +9.600s                                                       sipbridge: gateway status=stopping"""


def test_the_text_ladder_of_a_sample_call() -> None:
    assert ladder(sample_call()) == LADDER


def test_the_full_ladder_adds_each_sip_message_under_its_line() -> None:
    full = ladder(sample_call(), full=True).splitlines()
    invite = next(i for i, ln in enumerate(full) if "carrier  INVITE sip:" in ln)
    assert full[invite + 1:invite + 4] == [
        "              | INVITE sip:service@127.0.0.1:5060 SIP/2.0",
        "              | Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1",
        '              | From: "<script>alert(1)</script>" <sip:+15551230000@127.0.0.1:5070>;tag=1',
    ]
    assert [ln for ln in full if not ln.startswith("              | ")] == LADDER.splitlines()


def test_steps_are_the_rows_both_ladders_draw() -> None:
    rows = steps(sample_call())
    assert len(rows) == len(sample_call()["timeline"])
    invite, trying = rows[0], rows[1]
    assert (invite.source, invite.target, invite.kind) == ("carrier", "sipbridge", "sip")
    assert invite.sip_text == INVITE and abs(invite.at - 0.001) < 1e-6
    assert (trying.source, trying.target) == ("sipbridge", "carrier")
    failed = [r for r in rows if r.failing]
    assert [r.text for r in failed] == [
        "realtime.call.incoming #2: connection refused",
        "sideband client_event session.update",
        "transfer failed 486 (Busy Here)",
        "fallback announce failed",
        "model dropped",
        "SIP/2.0 486 Busy Here",
    ]
    transfer = next(r for r in rows if r.text == "transfer failed 486 (Busy Here)")
    assert transfer == Step(at=transfer.at, kind="transfer", source="sipbridge", target=None,
                            text="transfer failed 486 (Busy Here)", failing=True)
    accept = next(r for r in rows if r.kind == "api")
    assert (accept.source, accept.target, accept.text) == ("app", "sipbridge",
                                                          "accept model=gpt-realtime")
    model = next(r for r in rows if r.kind == "agent")
    assert (model.source, model.target) == ("sipbridge", "model")


def test_bad_entries_do_not_break_the_ladder() -> None:
    # not a record as any gateway writes one: a start that is text, entries that are not
    call = cast("CallRecord", {"id": "rtc_x", "created_at": "soon", "timeline": [
        "not an entry", {"kind": "sip", "at": "never", "line": "BYE sip:x SIP/2.0"}, {}]})
    rows = steps(call)
    assert [r.kind for r in rows] == ["sip", "None"]
    assert rows[0].at == 0.0 and rows[0].sip_text is None
    assert "BYE sip:x SIP/2.0" in ladder(call)


def test_the_list_row_of_a_call() -> None:
    ended = summarize(sample_call())
    assert (ended.state, ended.seconds, ended.end_reason, ended.outcome) == (
        "ended", 9.5, "remote_bye", "failed 486")
    live = summarize({**sample_call(), "state": "active", "ended_at": None,
                      "end_reason": None, "transfers": []}, now=T0 + 3.25)
    assert (live.seconds, live.end_reason, live.outcome) == (3.25, None, "-")
    table = calls_table([sample_call()]).splitlines()
    assert table[0].split() == ["CALL", "STATE", "FROM", "TO", "STARTED", "SECONDS", "END",
                                "TRANSFER"]
    assert table[1].endswith("9.5      remote_bye  failed 486")


def test_the_held_refer_says_what_it_waited_for() -> None:
    # a bare record: an id, a start and the timeline
    call = cast("CallRecord", {"id": "rtc_x", "created_at": T0, "timeline": [
        {"at": T0 + 2, "kind": "agent", "status": "speech_wait", "outcome": "played",
         "waited": 1.84, "detail": "the agent's words were played out after 1.84 s"}]})
    [row] = steps(call)
    assert row.text == "REFER held 1.84 s (played)"
    assert not row.failing and "REFER held 1.84 s (played)" in ladder(call)
