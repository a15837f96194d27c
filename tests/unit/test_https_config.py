"""HTTPS for the API: a key without its certificate, a file that is not there or does not
load, is a clear config error at start (nothing is bound); what loads speaks TLS 1.2 and
later only. The NAT addresses are flags too."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from sipbridge import cli
from sipbridge.api.app import tls_context
from sipbridge.config import ConfigError, load_config
from tests.tlscerts import make_ca


def test_a_key_without_a_certificate_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "api.key"
    key.write_text("not used")
    with pytest.raises(ConfigError, match="http_tls_key needs http_tls_cert"):
        load_config(http_tls_key=str(key))


@pytest.mark.parametrize("name", ["http_tls_cert", "http_tls_key"])
def test_a_missing_file_is_named(tmp_path: Path, name: str) -> None:
    cert = tmp_path / "api.crt"
    cert.write_text("x")
    given = {"http_tls_cert": str(cert), name: str(tmp_path / "absent.pem")}
    with pytest.raises(ConfigError, match=f"{name}.*absent.pem"):
        load_config(**given)


def test_files_that_do_not_load_are_a_value_error_naming_them(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    cert, _ = ca.issue("api", ip=["127.0.0.1"])
    _, other_key = ca.issue("other", ip=["127.0.0.1"])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=r"garbage\.pem"):
        tls_context(str(garbage), None)
    with pytest.raises(ValueError, match=r"api\.crt and .*other\.key"):
        tls_context(str(cert), str(other_key))  # a key that is not the certificate's


def test_the_context_speaks_tls_1_2_and_later(tmp_path: Path) -> None:
    cert, key = make_ca(tmp_path).issue("api", ip=["127.0.0.1"])
    context = tls_context(str(cert), str(key))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # clients are not asked for certificates


def test_serve_refuses_a_key_without_a_certificate(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "api.key"
    key.write_text("x")
    assert cli.main(["serve", "--http-tls-key", str(key), "--sip", "127.0.0.1:0"]) == 2
    assert "http_tls_key needs http_tls_cert" in capsys.readouterr().err


def test_the_address_and_https_flags_are_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["serve", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--http-tls-cert", "--http-tls-key", "--public-address",
                 "--sip-public-address", "--media-public-address"):
        assert flag in text
