"""Config: flags over SIPBRIDGE_ variables over the TOML file over defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipbridge.calls.outbound import OUTCOMES
from sipbridge.config import ConfigError, load_config, parse_host_port
from sipbridge.webhookevents import EVENT_TYPES, OUTBOUND_OUTCOMES, expand


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sipbridge.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config()
    assert config.sip_bind == ("0.0.0.0", 5060)
    assert config.http_bind == ("127.0.0.1", 8080)
    assert config.auto_answer is None
    assert config.reject_code == 480
    assert config.allow == ["127.0.0.0/8", "::1/128"]
    assert config.auth is None


def test_file_env_and_flags_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        'sip = "127.0.0.1:5071"\nhttp = "127.0.0.1:9001"\nauto_answer = "silence"\n'
        'ring_time = 2.5\n[auth]\nrealm = "pbx"\nusers = { alice = "secret" }\n',
    )
    config = load_config(path)
    assert config.sip_bind == ("127.0.0.1", 5071)
    assert config.ring_time == 2.5
    assert config.auth is not None and config.auth.users == {"alice": "secret"}
    monkeypatch.setenv("SIPBRIDGE_SIP", "127.0.0.1:5072")
    monkeypatch.setenv("SIPBRIDGE_AUTH__REALM", "trunk")
    config = load_config(path)
    assert config.sip_bind == ("127.0.0.1", 5072)  # env over file
    assert config.http_bind == ("127.0.0.1", 9001)  # file where env is silent
    config = load_config(path, sip="127.0.0.1:5073", http=None)
    assert config.sip_bind == ("127.0.0.1", 5073)  # flag over env
    assert config.http_bind == ("127.0.0.1", 9001)  # an unset flag changes nothing


def test_env_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPBRIDGE_AUTO_ANSWER", "silence")
    monkeypatch.setenv("SIPBRIDGE_ALLOW", '["10.0.0.0/8"]')
    config = load_config()
    assert config.auto_answer == "silence"
    assert config.allow == ["10.0.0.0/8"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('sip = "127.0.0.1:99999"', "sip"),
        ('auto_answer = "karaoke"', "auto_answer"),
        ('allow = ["not-a-network"]', "allow"),
        ("reject_code = 200", "reject_code"),
        ('rtp_ports = "5000"', "rtp_ports"),
        ('unknown_key = 1', "unknown_key"),
        ('rewrite_contact = ["10.0.0.0/33"]', "rewrite_contact"),
        ('dns_servers = ["ns1.example.com"]', "dns_servers"),
        ("dns_timeout = 0", "dns_timeout"),
        ('[auth]\nalgorithms = ["ROT13"]', "auth.algorithms"),
        ("sip = ", "invalid config file"),
        ('node_name = "Node_1"', "node_name"),
        ('node_name = "a"', "needs a PostgreSQL store"),
        ('node_name = "a"\nstore = "postgresql://h/db"', "needs cluster_secret"),
        ('node_name = "a"\nstore = "postgresql://h/db"\ncluster_secret = "short"',
         "at least 16"),
        ('node_name = "a"\nstore = "postgresql://h/db"\ncluster_secret = "0123456789abcdef"'
         '\nhttp = "off"', "needs the HTTP API"),
        ('node_name = "a"\nstore = "postgresql://h/db"\ncluster_secret = "0123456789abcdef"'
         "\ncluster_heartbeat = 5\ncluster_node_timeout = 10", "at least 3 x"),
        ('node_name = "a"\nstore = "postgresql://h/db"\ncluster_secret = "0123456789abcdef"'
         '\nnode_api_url = "10.0.0.1:8080"', "node_api_url must be"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert fragment in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/sipbridge.toml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:5060", ("127.0.0.1", 5060)),
        ("[::1]:5070", ("::1", 5070)),
        ("::1", ("::1", 5060)),
        (":5080", ("0.0.0.0", 5080)),
        ("example.com", ("example.com", 5060)),
    ],
)
def test_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value, 5060) == expected


def test_serve_refuses_bad_config_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'auto_answer = "karaoke"')
    proc = subprocess.run(
        [sys.executable, "-m", "sipbridge", "serve", "--config", str(path)],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "auto_answer" in proc.stderr


SECRET = "whsec_c2lwYnJpZGdlIHRlc3Qgc2VjcmV0"


def test_application_keys_from_flags_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f'api_key = ["file-key"]\nwebhook_secret = "{SECRET}"\n'
                           'webhook_url = "http://127.0.0.1:8000/hook"\n')
    config = load_config(path)
    assert config.api_key == ["file-key"] and config.webhook_secret == SECRET
    monkeypatch.setenv("SIPBRIDGE_API_KEY", "env-1, env-2")
    monkeypatch.setenv("SIPBRIDGE_WEBHOOK_URL", "https://app.example/hook")
    config = load_config(path)
    assert config.api_key == ["env-1", "env-2"]  # comma-separated in one variable
    assert config.webhook_url == "https://app.example/hook"
    config = load_config(path, api_key=["flag-1", "flag-2"])  # --api-key repeated
    assert config.api_key == ["flag-1", "flag-2"]


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("webhook_secret", "not-a-secret", "whsec_"),
    ("webhook_secret", "whsec_***", "whsec_"),
    ("webhook_url", "ftp://app/hook", "http"),
    ("accept_timeout_code", 200, "accept_timeout_code"),
])
def test_bad_application_settings_are_refused(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, **{key: value})


def test_http_off() -> None:
    assert load_config(None, http="off").http == "off"


def test_routing_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'rewrite_contact = ["192.0.2.0/24"]\n'
                                         'dns_servers = ["127.0.0.1:5353", "::1"]\n'
                                         "dns_timeout = 0.5\n"))
    assert config.rewrite_contact == ["192.0.2.0/24"]
    assert config.dns_servers == ["127.0.0.1:5353", "::1"]
    assert config.dns_timeout == 0.5
    defaults = load_config(None)
    assert defaults.rewrite_contact == [] and defaults.dns_servers == []


def test_registration_tables(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[registration]]\nname = "prov"\nregistrar = "sip.example.com:5070"\n'
                    'aor = "sip:100@example.com"\npassword = "pw"\ntransport = "tls"\n'
                    '[[registration]]\nname = "other"\nregistrar = "sip:192.0.2.1"\n'
                    'aor = "sip:200@example.org"\n')
    first, second = load_config(path).registration
    assert (first.registrar, first.transport, first.expires) == (
        "sip:sip.example.com:5070", "tls", 3600)
    assert "pw" not in repr(first)  # the password stays out of reprs and logs
    assert (second.registrar, second.retry_min, second.retry_max) == ("sip:192.0.2.1", 5, 300)


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"registrar": "h:5060", "aor": "100@example.com"}, "aor"),
    ({"registrar": "h:5060", "aor": "sip:example.com"}, "aor"),
    ({"registrar": "sip:u@h", "aor": "sip:1@h"}, "registrar"),
    ({"registrar": "h:99999", "aor": "sip:1@h"}, "registrar"),
    ({"registrar": "h", "aor": "sip:1@h", "transport": "sctp"}, "transport"),
    ({"registrar": "h", "aor": "sip:1@h", "expires": 5}, "expires"),
    ({"registrar": "h", "aor": "sip:1@h", "retry_min": 10, "retry_max": 5}, "retry_max"),
])
def test_bad_registrations_are_refused(entry: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(registration=[{"name": "p", **entry}])


def test_registration_names_differ() -> None:
    entry = {"name": "prov", "registrar": "h", "aor": "sip:1@h"}
    with pytest.raises(ConfigError, match="registration names must differ: prov"):
        load_config(registration=[entry, {**entry, "aor": "sip:2@h"}])

def test_tls_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'sip_tls = "127.0.0.1"\ntls_cert = "c.pem"\n'
                               'tls_key = "k.pem"\ntls_verify = false\n'
                               '[trunk]\naddress = "trunk.test"\ntransport = "tls"\n'))
    assert config.sip_tls_bind == ("127.0.0.1", 5061)  # TLS's own default port
    assert (config.tls_cert, config.tls_key, config.tls_ca) == ("c.pem", "k.pem", None)
    assert not config.tls_verify and not config.tls_verify_client
    assert config.tls_handshake_timeout == 10.0
    assert config.trunk is not None and config.trunk.bind == ("trunk.test", 5061)
    assert load_config().sip_tls_bind is None
    assert load_config(sip_tls="[::1]:5071").sip_tls_bind == ("::1", 5071)


def test_serve_names_what_tls_lacks_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, 'sip = "127.0.0.1:0"\nhttp = "off"\nstore = "off"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "sipbridge", "serve", "--config", str(path),
         "--sip-tls", "127.0.0.1:0"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "sip_tls needs tls_cert and tls_key" in proc.stderr


SECRET = "whsec_c2lwYnJpZGdl"


def test_webhook_endpoints_default_to_what_openai_sends(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f'webhook_url = "http://app/hook"\n'
                               f'webhook_secret = "{SECRET}"\nwebhook_timeout = 3\n'
                               f'[[webhook]]\nurl = "https://ops/hook"\nsecret = "{SECRET}"\n'
                               'events = ["realtime.call.transfer.*", '
                               '"realtime.call.outbound.busy"]\nattempts = 2\n'
                               f'[[webhook]]\nurl = "http://all/hook"\nsecret = "{SECRET}"\n'
                               'events = ["*"]\n'
                               f'[[webhook]]\nurl = "http://plain/hook"\nsecret = "{SECRET}"\n'))
    flat, ops, every, plain = config.webhook_endpoints
    assert (flat.url, flat.types, flat.timeout, flat.attempts) == (
        "http://app/hook", frozenset({"realtime.call.incoming"}), 3.0, 5)
    assert ops.types == {"realtime.call.transfer.succeeded", "realtime.call.transfer.failed",
                         "realtime.call.outbound.busy"}
    assert (ops.timeout, ops.attempts) == (3, 2)  # unset: the flat keys' values
    assert every.types == set(EVENT_TYPES) and len(EVENT_TYPES) == 9
    assert plain.types == {"realtime.call.incoming"}  # no events: OpenAI's own
    assert SECRET not in repr(ops)
    assert load_config().webhook_endpoints == []


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"url": "ftp://x/h", "secret": SECRET}, "url"),
    ({"url": "http://x/h", "secret": "whsec_***"}, "secret"),
    ({"url": "http://x/h"}, "secret"),
    ({"url": "http://x/h", "secret": SECRET, "events": ["realtime.call.transfer.succeded"]},
     "'realtime.call.transfer.succeded' is no webhook event type"),
    ({"url": "http://x/h", "secret": SECRET, "events": ["realtime.call.hangup.*"]}, "events"),
    ({"url": "http://x/h", "secret": SECRET, "events": []}, "events"),
    ({"url": "http://x/h", "secret": SECRET, "attempts": 0}, "attempts"),
])
def test_bad_webhook_endpoints_are_refused(entry: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(webhook=[entry])


def test_a_webhook_url_needs_its_secret() -> None:
    with pytest.raises(ConfigError, match="webhook_url needs webhook_secret"):
        load_config(webhook_url="http://app/hook")


def test_the_outbound_event_types_are_the_outbound_outcomes() -> None:
    assert OUTBOUND_OUTCOMES == OUTCOMES
    assert expand(["realtime.call.outbound.*"]) == {
        f"realtime.call.outbound.{o}" for o in OUTCOMES}
    assert expand(["realtime.call.incoming", "realtime.call.incoming"]) == {
        "realtime.call.incoming"}
