"""The dashboard's routes against the API app with a fake gateway: Basic auth with an API
key, escaping of what came from the internet, 404s and bad input, the call page's content
(transfer outcome, ladder, SIP text, transcript, recording) and the list's JSON."""

from __future__ import annotations

import base64
import re
import time
import wave
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sipbridge.api.app import create_app
from sipbridge.api.dashboard import basic_password
from sipbridge.calls.call import Call, CallState
from sipbridge.records import CallRecord
from tests.unit.apifakes import KEY, Control, Manager, Store, basic
from tests.unit.samplecall import T0, sample_call

FAILED = sample_call()["id"]
RECORDED = "rtc_recorded"
CHALLENGE = 'Basic realm="sipbridge"'


def write_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 2 * 8000)
    return path


@pytest.fixture
def live_call(tmp_path: Path) -> Call:
    return Call(id="rtc_live", leg_id="leg-1", caller="sip:+15550001111@127.0.0.1",
                callee="sip:agent@127.0.0.1", created_at=time.time() - 2.0,
                state=CallState.ACTIVE, recording=str(write_wav(tmp_path / "live.wav")))


@pytest.fixture
def control(tmp_path: Path, live_call: Call) -> Control:
    recorded: CallRecord = {**sample_call(), "id": RECORDED, "created_at": T0 - 60,
                            "transfers": [], "recording": str(write_wav(tmp_path / "call.wav"))}
    return Control(calls=Manager(live_call), store=Store(sample_call(), recorded))


@pytest.fixture
def http(control: Control) -> TestClient:
    return TestClient(create_app(control, [KEY]), headers=basic("ops", KEY))


PROTECTED = ["/dashboard", "/dashboard/api/calls", f"/dashboard/calls/{FAILED}",
             f"/dashboard/calls/{RECORDED}/recording", "/dashboard/static/dashboard.js",
             "/dashboard/overview", "/dashboard/api/overview"]


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize("headers", [
    {},
    basic("ops", "wrong"),
    basic(KEY, ""),
    {"Authorization": f"Bearer {KEY}"},
    {"Authorization": "Basic %%%not-base64"},
    {"Authorization": "Basic " + base64.b64encode(KEY.encode()).decode()},  # no colon
    {"Authorization": "Basic " + base64.b64encode(b"ops:\xff").decode()},  # not UTF-8
], ids=["none", "wrong", "key-as-user", "bearer", "garbage", "no-colon", "not-utf8"])
def test_without_the_key_as_basic_password_the_dashboard_says_401(
    control: Control, path: str, headers: dict[str, str]
) -> None:
    reply = TestClient(create_app(control, [KEY])).get(path, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == CHALLENGE
    assert "+15551230000" not in reply.text and "RIFF" not in reply.text


@pytest.mark.parametrize("path", PROTECTED)
def test_any_user_name_with_an_api_key_opens_it(control: Control, path: str) -> None:
    app = create_app(control, ["sk-other", KEY])
    reply = TestClient(app).get(path, headers=basic("anyone", KEY))
    assert reply.status_code == 200, reply.text


def test_the_api_keeps_bearer_auth_only(http: TestClient) -> None:
    assert http.get("/v1/realtime/calls").status_code == 401  # Basic is not for /v1
    reply = http.get("/v1/realtime/calls", headers={"Authorization": f"Bearer {KEY}"})
    assert reply.status_code == 200
    assert not [p for p in http.get("/openapi.json").json()["paths"] if "dashboard" in p]


def test_with_no_api_key_the_dashboard_is_open(control: Control) -> None:
    http = TestClient(create_app(control, []))
    assert http.get("/dashboard").status_code == 200
    assert http.get(f"/dashboard/calls/{FAILED}").status_code == 200


def test_basic_password() -> None:
    assert basic_password(basic("u", "p:q")["Authorization"]) == "p:q"
    assert basic_password("basic " + base64.b64encode(b":k").decode()) == "k"
    assert basic_password(None) is None
    assert basic_password("Digest abc") is None


def test_what_came_from_the_internet_is_escaped(control: Control) -> None:
    record = control.store.records[FAILED]
    record["transfers"][0]["target_uri"] = '"><img src=x onerror=alert(2)>'
    record["end_reason"] = "</dd><script>alert(3)</script>"
    reply = TestClient(create_app(control, [KEY]), headers=basic("u", KEY)).get(
        f"/dashboard/calls/{FAILED}")
    page = reply.text
    assert reply.status_code == 200
    for raw in ("<script>alert(1)</script>", "<img src=x", "<script>alert(3)", "<b>sales</b>"):
        assert raw not in page
    assert '&quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot; &lt;sip:+15551230000' in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "Put me through to &lt;b&gt;sales&lt;/b&gt; &amp; co." in page
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script src="/dashboard/static/dashboard.js" defer>']
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", [
    "/dashboard/calls/rtc_nope",
    "/dashboard/calls/%3Cimg%20src%3Dx%3E",
    "/dashboard/calls/" + "x" * 5000,
    "/dashboard/calls/rtc_nope/recording",
    f"/dashboard/calls/{FAILED}/recording",  # a call without a recording
    "/dashboard/static/..%2F..%2F__init__.py",
    "/dashboard/static/nothing.js",
])
def test_unknown_things_are_404_pages(http: TestClient, path: str) -> None:
    reply = http.get(path)
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("text/html")
    assert "<img src=x>" not in reply.text and "All calls" in reply.text


def test_bad_input_is_a_client_error(http: TestClient, control: Control) -> None:
    for query in ("limit=0", "limit=abc", "limit=100000"):
        assert http.get(f"/dashboard/api/calls?{query}").status_code == 400
    control.calls = None  # the gateway is starting
    assert http.get(f"/dashboard/calls/{FAILED}").status_code == 503
    assert http.get("/dashboard/api/calls").status_code == 503


def steps_of(page: str) -> list[str]:
    """The ladder's rows, one HTML chunk each."""
    return page.split('<li class="step ')[1:]


def test_the_call_page_shows_the_outcome_ladder_and_transcript(
    http: TestClient, control: Control
) -> None:
    control.store.records[FAILED]["transfers"][0]["fallback"] = {
        "mode": "bridge", "status": "failed", "reason": "no outbound trunk configured"}
    page = http.get(f"/dashboard/calls/{FAILED}").text
    transfer = page[page.index('id="transfer"') - 60:page.index('id="ladder"')]
    assert 'class="panel transfer tone-bad"' in transfer
    assert '<span class="outcome-status" id="transfer-status">failed</span>' in transfer
    assert '<span class="outcome-sip" id="transfer-sip">486 Busy Here</span>' in transfer
    assert '<span class="mono">tel:+61420351258</span>' in transfer
    assert "<dd>bridge: failed (no outbound trunk configured)</dd>" in transfer
    rows = steps_of(page)
    failing = [r for r in rows if r.startswith("kind-") and " failing" in r.split('"')[0]]
    assert len(failing) == 6 and all('<span class="flag">FAILED</span>' in r for r in failing)
    assert sum('<span class="flag">' in r for r in rows) == 6
    transfer_row = next(r for r in rows if "transfer failed 486 (Busy Here)" in r)
    assert transfer_row.startswith('kind-transfer failing"')
    sip = [re.search(r'title="([^"]*)"', r).group(1) for r in rows  # type: ignore[union-attr]
           if r.startswith("kind-sip")]
    assert sip[:3] == ["INVITE sip:service@127.0.0.1:5060 SIP/2.0", "SIP/2.0 100 Trying",
                       "SIP/2.0 180 Ringing"]
    invite = rows[0]
    assert '<details id="step-0"><summary class="row">' in invite
    assert '<span class="arrow span-01 right ">' in invite
    assert "<pre class=\"sip-text\">INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\nVia:" in invite
    assert '<span class="arrow span-01 left ">' in rows[1]
    assert "+0.001 s" in invite
    accept = next(r for r in rows if "accept model=gpt-realtime" in r)
    assert '<span class="arrow span-12 left ">' in accept and "<details" not in accept
    assert '<span class="arrow span-12 right model">' in next(r for r in rows
                                                              if "model connected" in r)
    assert not [r for r in rows if "transcript" in r]  # the transcript has its own section
    turns = re.findall(r'<li class="turn (\w+)"><span class="who">(\w+)</span>'
                       r'<span class="at">([^<]+)</span><p>([^<]*)</p>', page)
    assert turns == [("agent", "Agent", "+1.0 s", "Hello, how can I help?"),
                     ("caller", "Caller", "+1.5 s",
                      "Put me through to &lt;b&gt;sales&lt;/b&gt; &amp; co.")]
    assert 'data-live="0"' in page and "<audio" not in page
    assert "remote_bye" in page and "9.5 s" in page


def test_the_recording_plays_from_the_dashboard(http: TestClient) -> None:
    page = http.get(f"/dashboard/calls/{RECORDED}").text
    src = f"/dashboard/calls/{RECORDED}/recording"
    assert f'<audio controls preload="metadata" src="{src}"></audio>' in page
    assert "No transfer on this call." in page
    wav = http.get(src)
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"
    part = http.get(src, headers={"Range": "bytes=0-99"})  # what <audio> asks for
    assert part.status_code == 206 and len(part.content) == 100


def test_a_live_call_page_refreshes_and_has_no_player_yet(http: TestClient) -> None:
    page = http.get("/dashboard/calls/rtc_live").text
    assert 'data-page="call" data-live="1"' in page
    assert '<span class="live-dot" title="live"></span>' in page
    assert "<audio" not in page  # the WAV is still being written
    assert "Nothing on the timeline yet." in page


def test_the_list_data(http: TestClient) -> None:
    page = http.get("/dashboard")
    assert page.status_code == 200 and 'data-source="/dashboard/api/calls"' in page.text
    data = http.get("/dashboard/api/calls").json()
    assert abs(data["now"] - time.time()) < 5
    live, failed, recorded = data["calls"]  # newest first
    assert (live["id"], live["state"], live["live"], live["end_reason"]) == (
        "rtc_live", "active", True, None)
    assert re.fullmatch(r"2\.\d s", live["duration"]) and live["transfer"] is None
    assert live["href"] == "/dashboard/calls/rtc_live"
    assert failed == {
        "id": FAILED, "href": f"/dashboard/calls/{FAILED}", "state": "ended", "live": False,
        "caller": '"<script>alert(1)</script>" <sip:+15551230000@127.0.0.1>',
        "callee": "sip:+15559870000@127.0.0.1:5060", "started": T0, "duration": "9.5 s",
        "end_reason": "remote_bye",
        "transfer": {"outcome": "failed 486", "tone": "bad", "reason": "Busy Here",
                     "target": "tel:+61420351258"}}
    assert recorded["id"] == RECORDED and recorded["duration"] == "1 min 09 s"


def test_the_static_files(http: TestClient) -> None:
    script = http.get("/dashboard/static/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "textContent" in script.text and "innerHTML" not in script.text
    style = http.get("/dashboard/static/dashboard.css")
    assert style.headers["content-type"].startswith("text/css") and ".ladder" in style.text


def test_a_warm_transfers_person_is_named_in_the_transcript(
    http: TestClient, control: Control
) -> None:
    timeline = control.store.records[FAILED]["timeline"]
    said = next(e for e in timeline if e.get("kind") == "transcript")
    timeline.append({**said, "role": "person", "text": "Yes, put them through."})
    page = http.get(f"/dashboard/calls/{FAILED}").text
    turns = re.findall(r'<span class="who">(\w+)</span><span class="at">[^<]+</span>'
                       r'<p>([^<]*)</p>', page)
    assert turns[-1] == ("Person", "Yes, put them through.")
