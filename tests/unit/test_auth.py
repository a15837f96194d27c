"""SIP digest authentication: RFC vectors, server verification, client answers."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.sip.auth import (
    MAX_HEADER_LENGTH,
    SUPPORTED_ALGORITHMS,
    AuthResult,
    Challenge,
    DigestServer,
    authorization,
    choose_challenge,
    digest_response,
    ha1,
    parse_auth_params,
    parse_challenge,
)
from sipbridge.sip.errors import ParseError

REALM = "gw.example.com"
USERS = {"alice": "wonderland", "bob": "builder"}
SECRET = b"k" * 32
URI = "sip:agent@gw.example.com"
T0 = 1_000.0


def make_server(**kwargs: object) -> DigestServer:
    return DigestServer(REALM, USERS, secret=SECRET, **kwargs)  # type: ignore[arg-type]


def answer(
    value: str,
    *,
    username: str = "alice",
    password: str = "wonderland",
    method: str = "INVITE",
    qop: bool = True,
) -> str:
    chal = parse_challenge(value)
    if not qop:
        chal = dataclasses.replace(chal, qop=())
    return authorization(
        chal, method=method, uri=URI, username=username, password=password, cnonce="c0ffee"
    )


def by_algorithm(values: list[str], algorithm: str) -> str:
    return next(v for v in values if parse_challenge(v).algorithm == algorithm)


# --- known vectors -----------------------------------------------------------


def test_rfc2617_section_3_5_md5_vector() -> None:
    key = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(
        "MD5", key, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "auth", "00000001", "0a4f113b",
    )  # fmt: skip
    assert response == "6629fae49393a05397450978507c4ef1"


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    key = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = digest_response(
        algorithm, key, "GET", "/dir/index.html", RFC7616_NONCE, "auth", "00000001", RFC7616_CNONCE
    )
    assert response == expected


def test_authorization_header_reproduces_rfc7616_example() -> None:
    chal = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        f'nonce="{RFC7616_NONCE}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    assert chal.qop == ("auth", "auth-int")
    value = authorization(
        chal, method="GET", uri="/dir/index.html", username="Mufasa",
        password="Circle of Life", cnonce=RFC7616_CNONCE,
    )  # fmt: skip
    scheme, params = parse_auth_params(value)
    assert scheme == "Digest"
    assert params["response"] == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert (params["qop"], params["nc"], params["algorithm"]) == ("auth", "00000001", "SHA-256")
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc2069_form_matches_independent_computation() -> None:
    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    key = md5("Mufasa:testrealm@host.com:Circle Of Life")
    expected = md5(f"{key}:abc:{md5('GET:/dir/index.html')}")
    assert digest_response("MD5", key, "GET", "/dir/index.html", "abc") == expected


# --- the auth-param parser ---------------------------------------------------


def test_parser_handles_quotes_escapes_case_and_empty_elements() -> None:
    scheme, params = parse_auth_params(
        '  DIGEST Realm="a \\"b\\", c" ,NONCE = xyz==,, qop=auth , uri="sip:x@y;transport=tcp"'
    )
    assert scheme == "DIGEST"
    assert params == {
        "realm": 'a "b", c',
        "nonce": "xyz==",
        "qop": "auth",
        "uri": "sip:x@y;transport=tcp",
    }


def test_parser_refuses_values_over_the_cap() -> None:
    with pytest.raises(ParseError, match="too long"):
        parse_auth_params('Digest realm="' + "a" * MAX_HEADER_LENGTH + '"')


@given(st.text(alphabet='Digest realm="\\, \t=x\x00\r\n\u00e9', max_size=200))
def test_parser_raises_only_parse_error(value: str) -> None:
    with contextlib.suppress(ParseError):
        parse_auth_params(value)


@given(st.text(max_size=300))
def test_verify_never_raises(value: str) -> None:
    result = make_server().verify("INVITE", value, T0)
    assert not result.ok
    assert result.reason


# --- server: challenges and verification -------------------------------------


def test_challenge_lists_sha256_before_md5_with_one_nonce() -> None:
    values = make_server().challenge(T0)
    chals = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in chals] == ["SHA-256", "MD5"]
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in chals)
    assert chals[0].nonce == chals[1].nonce
    assert values[0].startswith(f'Digest realm="{REALM}", nonce="')
    assert all(parse_challenge(v).stale for v in make_server().challenge(T0, stale=True))


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
@pytest.mark.parametrize("qop", [True, False])
def test_round_trip_verifies(algorithm: str, qop: bool) -> None:
    server = make_server(algorithms=(algorithm,))
    (value,) = server.challenge(T0)
    header = answer(value, qop=qop)
    assert ("qop=auth" in header) is qop
    result = server.verify("INVITE", header, T0 + 10)
    assert result == AuthResult(ok=True, username="alice", stale=False, reason="ok", uri=URI)


def test_absent_algorithm_means_md5() -> None:
    server = make_server()
    values = server.challenge(T0)
    md5 = answer(by_algorithm(values, "MD5")).replace(", algorithm=MD5", "")
    assert "algorithm" not in md5
    assert server.verify("INVITE", md5, T0).ok
    sha = answer(by_algorithm(values, "SHA-256")).replace(", algorithm=SHA-256", "")
    assert server.verify("INVITE", sha, T0).reason == "response does not match"


def test_algorithm_not_offered_is_refused() -> None:
    md5 = answer(make_server().challenge(T0)[1])
    result = make_server(algorithms=("SHA-256",)).verify("INVITE", md5, T0)
    assert (result.ok, result.reason) == (False, "algorithm not offered")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"password": "wrong"}, "response does not match"),
        ({"username": "mallory"}, "unknown user"),
        ({"method": "BYE"}, "response does not match"),
    ],
)
def test_bad_credentials_are_refused(kwargs: dict[str, Any], reason: str) -> None:
    server = make_server()
    result = server.verify("INVITE", answer(server.challenge(T0)[0], **kwargs), T0)
    assert (result.ok, result.username, result.stale, result.reason) == (False, None, False, reason)


def test_wrong_realm_is_refused() -> None:
    other = DigestServer("other.example.com", USERS, secret=SECRET)
    result = make_server().verify("INVITE", answer(other.challenge(T0)[0]), T0)
    assert (result.ok, result.reason) == (False, "realm does not match")


def test_tampered_nonce_fails_the_hmac() -> None:
    server = make_server()
    value = server.challenge(T0)[0]
    nonce = parse_challenge(value).nonce
    forged = nonce[:3] + ("A" if nonce[3] != "A" else "B") + nonce[4:]
    header = answer(value.replace(nonce, forged))  # response is right for the forged nonce
    assert server.verify("INVITE", header, T0).reason == "nonce not issued by this server"
    foreign = DigestServer(REALM, USERS, secret=b"x" * 32)
    result = server.verify("INVITE", answer(foreign.challenge(T0)[0]), T0)
    assert (result.ok, result.reason) == (False, "nonce not issued by this server")


def test_expired_nonce_is_stale_only_when_the_response_is_right() -> None:
    server = make_server(nonce_ttl=30.0)
    value = server.challenge(T0)[0]
    assert server.verify("INVITE", answer(value), T0 + 30.0).ok  # the edge is still fresh
    result = server.verify("INVITE", answer(value), T0 + 30.5)
    assert (result.ok, result.stale, result.reason) == (False, True, "nonce expired")
    wrong = server.verify("INVITE", answer(value, password="wrong"), T0 + 30.5)
    assert (wrong.ok, wrong.stale) == (False, False)


def test_nonce_from_the_future_is_refused() -> None:
    server = make_server()
    result = server.verify("INVITE", answer(server.challenge(T0 + 60)[0]), T0)
    assert not result.ok and not result.stale


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda h: h.replace("qop=auth", "qop=auth-int"), "qop not offered"),
        (lambda h: h.replace("nc=00000001", "nc=1"), "nc is missing or not 8 hex digits"),
        (lambda h: h.replace('cnonce="c0ffee", ', ""), "cnonce is missing"),
        (lambda h: h.replace("Digest ", "Basic "), "auth scheme is not Digest"),
    ],
)
def test_bad_qop_parameters_are_refused(edit: object, reason: str) -> None:
    server = make_server()
    header = edit(answer(server.challenge(T0)[0]))  # type: ignore[operator]
    assert server.verify("INVITE", header, T0).reason == reason


GOOD = f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab"'
GARBAGE = [
    "",
    "   ",
    "Digest",
    'username="alice", realm="x"',
    'Digest realm="unterminated',
    'Digest realm="ends in escape\\"',
    "Digest realm",
    "Digest realm=",
    "Digest =x",
    "Digest a=1 b=2",
    "Digest a=1, A=2",
    "Digest,realm=x",
    "Digest realm=x\r\nVia: injected",
    "\x00\x01\x02",
    "Digest " + "x=" + "y" * 10_000,
    GOOD.replace(', response="ab"', ""),
    GOOD.replace('username="alice", ', ""),
    GOOD.replace('nonce="n"', 'nonce="\u00f1\u00f1\u00f1"'),
    GOOD.replace('nonce="n"', 'nonce="!!!!"'),
    "Basic YWxpY2U6d29uZGVybGFuZA==",
]


@pytest.mark.parametrize("value", GARBAGE)
def test_malformed_header_values_give_a_reason(value: str) -> None:
    result = make_server().verify("INVITE", value, T0)
    assert (result.ok, result.username, result.stale) == (False, None, False)
    assert result.reason


def test_malformed_reasons_are_precise() -> None:
    server = make_server()
    no_response = GOOD.replace(', response="ab"', "")
    assert server.verify("INVITE", no_response, T0).reason == (
        "Authorization header has no response parameter"
    )
    assert server.verify("INVITE", "Digest " + "x" * 5000, T0).reason == (
        "auth header value too long"
    )
    assert "malformed" in server.verify("INVITE", 'Digest realm="open', T0).reason


def test_verify_any_picks_our_realm() -> None:
    server = make_server()
    ours = answer(server.challenge(T0)[0])
    theirs = answer(DigestServer("proxy.example.net", USERS).challenge(T0)[0])
    assert server.verify_any("INVITE", ["garbage", theirs, ours], T0).ok
    miss = server.verify_any("INVITE", [theirs, "garbage"], T0)
    assert (miss.ok, miss.reason) == (False, f"no Digest credentials for realm {REALM}")
    assert not server.verify_any("INVITE", [], T0).ok


def test_challenges_leave_no_state_behind() -> None:
    server = make_server()
    before = copy.deepcopy(vars(server))
    nonces = {parse_challenge(server.challenge(T0 + i * 0.001)[0]).nonce for i in range(10_000)}
    assert len(nonces) == 10_000
    assert vars(server) == before
    # a nonce issued by one instance verifies on another that shares the secret
    header = answer(server.challenge(T0)[0])
    assert make_server().verify("INVITE", header, T0 + 1).ok


def test_quotes_in_username_survive_the_round_trip() -> None:
    server = DigestServer(REALM, {'o"brien\\': "pw"}, secret=SECRET)
    header = answer(server.challenge(T0)[0], username='o"brien\\', password="pw")
    assert server.verify("INVITE", header, T0).username == 'o"brien\\'


def test_server_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, USERS, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestServer(REALM, USERS, algorithms=())
    with pytest.raises(ValueError):
        DigestServer(REALM, USERS, nonce_ttl=0)


# --- client side -------------------------------------------------------------


def chal(algorithm: str, nonce: str = "n1") -> str:
    return f'Digest realm="trunk", nonce="{nonce}", algorithm={algorithm}, qop="auth"'


@pytest.mark.parametrize(
    "values",
    [
        [chal("MD5", "a"), chal("SHA-256", "b")],
        [chal("SHA-256", "b"), chal("MD5", "a")],
        ["Basic realm=x", chal("SHA-1"), "junk", chal("md5", "a"), chal("sha-256", "b")],
    ],
)
def test_choose_challenge_prefers_sha256(values: list[str]) -> None:
    chosen = choose_challenge(values)
    assert (chosen.algorithm, chosen.nonce) == ("SHA-256", "b")


def test_choose_challenge_keeps_server_order_on_ties_and_fails_when_nothing_fits() -> None:
    assert choose_challenge([chal("MD5", "a"), chal("MD5", "b")]).nonce == "a"
    with pytest.raises(ParseError):
        choose_challenge(["Basic realm=x", chal("SHA-1"), ""])


def test_parse_challenge_defaults_and_errors() -> None:
    parsed = parse_challenge('digest nonce="n", realm="r", stale=TRUE')
    assert parsed == Challenge("Digest", "r", "n", "MD5", (), None, True)
    for bad in ["Basic realm=x", 'Digest realm="r"', 'Digest nonce="n"', "Digest realm=", ""]:
        with pytest.raises(ParseError):
            parse_challenge(bad)


def test_auth_int_covers_the_body() -> None:
    chal_ = Challenge("Digest", "trunk", "n", "SHA-256", ("auth-int",), None, False)
    args: dict[str, Any] = {"method": "INVITE", "uri": URI, "username": "u", "password": "p",
                            "cnonce": "c"}
    value = authorization(chal_, body=b"v=0\r\n", nc=2, **args)
    params = parse_auth_params(value)[1]
    assert (params["qop"], params["nc"]) == ("auth-int", "00000002")

    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    ha2 = sha(f"INVITE:{URI}:{sha(b'v=0' + bytes([13, 10]))}".encode())
    expected = sha(f"{sha(b'u:trunk:p')}:n:00000002:c:auth-int:{ha2}".encode())
    assert params["response"] == expected
    other = parse_auth_params(authorization(chal_, body=b"v=1\r\n", nc=2, **args))[1]
    assert other["response"] != expected


def test_authorization_refuses_what_it_cannot_compute() -> None:
    args: dict[str, Any] = {"method": "INVITE", "uri": URI, "username": "u", "password": "p",
                            "cnonce": "c"}
    with pytest.raises(ParseError):
        authorization(Challenge("Digest", "r", "n", "SHA-1", (), None, False), **args)
    with pytest.raises(ValueError):
        authorization(Challenge("Digest", "r", "n", "MD5", (), None, False), nc=0, **args)
