"""The carrier configs in deploy/carriers load as they are, say what the README says of
them, and are the same text as the README shows."""

from __future__ import annotations

from pathlib import Path

from sipbridge.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CARRIERS = ROOT / "deploy" / "carriers"


def test_the_readme_shows_each_carrier_config_as_it_is_in_deploy() -> None:
    readme = (ROOT / "README.md").read_text()
    files = sorted(CARRIERS.glob("*.toml"))
    assert len(files) == 2
    for path in files:
        assert f"```toml\n{path.read_text()}```" in readme, f"README differs from {path.name}"


def test_twilio_is_secure_trunking_with_transfers() -> None:
    config = load_config(CARRIERS / "twilio-elastic-sip-trunking.toml")
    assert config.sip_tls_bind == ("0.0.0.0", 5061)
    assert config.tls_cert and config.tls_key and config.tls_verify
    assert config.srtp == "required" and not config.srtp_over_cleartext
    assert config.trunk is not None and config.trunk.transport == "tls"
    assert config.trunk.bind == ("example.pstn.twilio.com", 5061)
    assert config.transfer_tel_uri == "sip:{number}@example.pstn.twilio.com"
    assert config.codecs == ["PCMU", "PCMA"]
    assert config.api_key and config.webhook_secret


def test_the_registration_provider_registers_and_dials_with_one_account() -> None:
    config = load_config(CARRIERS / "registration-provider.toml")
    (entry,) = config.registration
    assert entry.registrar == "sip:sip.provider.example" and entry.expires == 600
    assert entry.aor == "sip:15551230000@sip.provider.example"
    assert config.trunk is not None
    assert (config.trunk.username, config.trunk.password) == (entry.username, entry.password)
    assert config.codecs[0] == "G722"
