"""sipbridge against SIPp: real calls over UDP and TCP on loopback.

Each test starts its own gateway (``start_gateway``) with the config it
needs and runs one SIPp scenario at it (``sipp``); see conftest.py for the fixtures.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.gateway import Gateway
from tests.integration.sipp import SCENARIOS, SippResult

pytestmark = pytest.mark.integration

TRANSPORTS = ["udp", "tcp"]

# The source that must authenticate is 127.0.0.1 (where SIPp runs); the
# allow-list names another loopback address only.
OUTSIDE_ALLOW_LIST = ["127.0.0.2/32"]
AUTH = {"realm": "sipbridge", "users": {"alice": "secret"}, "algorithms": ["MD5"]}

StartGateway = Callable[..., "Gateway"]
Sipp = Callable[..., "SippResult"]


def responses(result: SippResult, method: str) -> list[int]:
    """Status codes of the responses SIPp received to ``method`` requests,
    in order, from its message trace."""
    codes = []
    for message in re.split(r"\n-{20,} [^\n]*\n", result.messages):
        if "message received" not in message:
            continue
        status = re.search(r"^SIP/2\.0 (\d{3})", message, re.MULTILINE)
        cseq = re.search(r"^CSeq:\s*\d+\s+(\w+)", message, re.MULTILINE | re.IGNORECASE)
        if status and cseq and cseq.group(1).upper() == method:
            codes.append(int(status.group(1)))
    return codes


def refusal_scenario(tmp_path: Path, codes: list[int]) -> Path:
    """refused_403.xml, made to accept any one of ``codes`` as the final
    response (then ACK it)."""
    *optional, last = codes
    recvs = "".join(f'<recv response="{c}" optional="true" next="refused"/>\n  ' for c in optional)
    recvs += f'<recv response="{last}"/>\n  <label id="refused"/>'
    text = (SCENARIOS / "refused_403.xml").read_text()
    assert '<recv response="403"/>' in text
    path = tmp_path / f"refused_{'_'.join(map(str, codes))}.xml"
    path.write_text(text.replace('<recv response="403"/>', recvs))
    return path


def assert_all_succeeded(result: SippResult, calls: int) -> None:
    assert result.returncode == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


# --- the process -----------------------------------------------------------


def test_prints_listening_line_when_ready(gateway: Gateway) -> None:
    assert f"sipbridge: listening on udp+tcp {gateway.address}" in gateway.log()


def test_answers_options_over_udp(gateway: Gateway) -> None:
    status = gateway.options(timeout=2)
    assert status is not None and status.startswith("SIP/2.0 200"), status


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(gateway: Gateway, sig: signal.Signals) -> None:
    assert gateway.stop(sig) == 0, gateway.log()


# --- calls -----------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_uac_calls_all_answered(gateway: Gateway, sipp: Sipp, transport: str) -> None:
    """SIPp's built-in uac: INVITE, 100/180, 200, ACK, BYE, 200; 20 calls at 10 cps."""
    result = sipp(gateway, "uac", calls=20, rate=10, transport=transport, trace_msg=False)
    assert_all_succeeded(result, 20)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_options_answered_200(gateway: Gateway, sipp: Sipp, transport: str) -> None:
    result = sipp(gateway, "options.xml", transport=transport)
    assert_all_succeeded(result, 1)
    assert responses(result, "OPTIONS") == [200], result.describe()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_of_ringing_call(start_gateway: StartGateway, sipp: Sipp, transport: str) -> None:
    """INVITE, 180, CANCEL: 200 to the CANCEL and 487 to the INVITE, before
    the auto-answer would have come."""
    gw = start_gateway(auto_answer="silence", ring_time=5.0)
    result = sipp(gw, "cancel.xml", transport=transport)
    assert_all_succeeded(result, 1)
    assert responses(result, "CANCEL") == [200], result.describe()
    invite = responses(result, "INVITE")
    assert 180 in invite and invite[-1] == 487 and 200 not in invite, result.describe()
    assert result.elapsed < 5.0, result.describe()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reinvite_hold_and_resume(gateway: Gateway, sipp: Sipp, transport: str) -> None:
    """re-INVITE a=sendonly is answered a=recvonly; a=sendrecv, sendrecv."""
    result = sipp(gateway, "reinvite.xml", transport=transport)
    assert_all_succeeded(result, 1)
    assert [c for c in responses(result, "INVITE") if c >= 200] == [200, 200, 200]
    assert responses(result, "BYE") == [200], result.describe()


@pytest.mark.parametrize("reject_code", [480, 486])
def test_unanswered_call_refused_with_reject_code(
    start_gateway: StartGateway, sipp: Sipp, tmp_path: Path, reject_code: int
) -> None:
    """Without auto_answer and with no application, calls get reject_code."""
    gw = start_gateway(reject_code=reject_code)
    result = sipp(gw, refusal_scenario(tmp_path, [reject_code]))
    assert_all_succeeded(result, 1)
    assert responses(result, "INVITE")[-1] == reject_code, result.describe()


# --- who may call ----------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_outside_allow_list_refused_403(
    start_gateway: StartGateway, sipp: Sipp, transport: str
) -> None:
    gw = start_gateway(auto_answer="silence", allow=OUTSIDE_ALLOW_LIST)
    result = sipp(gw, "refused_403.xml", transport=transport)
    assert_all_succeeded(result, 1)
    assert responses(result, "INVITE") in ([403], [100, 403]), result.describe()


def test_allow_listed_source_needs_no_auth(start_gateway: StartGateway, sipp: Sipp) -> None:
    """A source inside `allow` is let in unchallenged even when [auth] is set."""
    gw = start_gateway(auto_answer="silence", allow=OUTSIDE_ALLOW_LIST, auth=AUTH)
    result = sipp(gw, "uac", local_ip="127.0.0.2")
    assert_all_succeeded(result, 1)
    assert not {401, 407} & set(responses(result, "INVITE")), result.describe()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_digest_authenticated_call(start_gateway: StartGateway, sipp: Sipp, transport: str) -> None:
    gw = start_gateway(auto_answer="silence", allow=OUTSIDE_ALLOW_LIST, auth=AUTH)
    result = sipp(gw, "auth_call.xml", transport=transport)
    assert_all_succeeded(result, 1)
    finals = [c for c in responses(result, "INVITE") if c >= 200]
    assert finals[0] in (401, 407) and finals[-1] == 200, result.describe()
    assert re.search(r'(?i)authorization: digest username="alice"', result.messages)
    assert responses(result, "BYE") == [200], result.describe()


def test_digest_challenge_prefers_sha256_then_md5(
    start_gateway: StartGateway, sipp: Sipp, tmp_path: Path
) -> None:
    """RFC 8760 2.4: one challenge per algorithm, in the server's order."""
    gw = start_gateway(
        auto_answer="silence",
        allow=OUTSIDE_ALLOW_LIST,
        auth={**AUTH, "algorithms": ["SHA-256", "MD5"]},
    )
    result = sipp(gw, refusal_scenario(tmp_path, [401, 407]))
    assert_all_succeeded(result, 1)
    challenges = re.findall(r"(?im)^(?:www|proxy)-authenticate:.*$", result.messages)
    algorithms = [re.search(r"(?i)algorithm=\"?([\w-]+)", c) for c in challenges]
    assert [a.group(1).upper() for a in algorithms if a] == ["SHA-256", "MD5"], challenges


def test_digest_authenticated_call_sha256_preferred(
    start_gateway: StartGateway, sipp: Sipp
) -> None:
    """A client that can answer SHA-256 gets in when the gateway prefers it.
    SIPp before 3.7 answers MD5 only and reads the first challenge, so there
    the test is skipped."""
    gw = start_gateway(
        auto_answer="silence",
        allow=OUTSIDE_ALLOW_LIST,
        auth={**AUTH, "algorithms": ["SHA-256", "MD5"]},
    )
    result = sipp(gw, "auth_call.xml")
    if "authentication must use MD5" in result.output + result.errors:
        pytest.skip("this SIPp answers MD5 digest challenges only (SHA-256 came in SIPp 3.7)")
    assert_all_succeeded(result, 1)
    assert re.search(r"(?im)^authorization:.*algorithm=\"?SHA-256", result.messages), (
        result.describe()
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password_refused(start_gateway: StartGateway, sipp: Sipp, transport: str) -> None:
    gw = start_gateway(auto_answer="silence", allow=OUTSIDE_ALLOW_LIST, auth=AUTH)
    result = sipp(gw, "auth_wrong_password.xml", transport=transport)
    assert_all_succeeded(result, 1)
    finals = [c for c in responses(result, "INVITE") if c >= 200]
    assert len(finals) == 2 and finals[-1] in (401, 403, 407), result.describe()
