"""Throwaway certificates for the TLS tests: a CA made in a test's directory with the
openssl CLI, and certificates it issues for loopback names and addresses.

``ca = make_ca(tmp_path); cert, key = ca.issue("gateway", dns=["localhost"],
ip=["127.0.0.1"])``. Every file is PEM; ``ca.cert`` is the trust store to give peers.
Keys are EC P-256 (quick to make: a CA and two certificates take about 50 ms).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

DAYS = "2"  # long enough for any test run, short enough to be useless anywhere else


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path), cwd=path.parent)


@dataclass(frozen=True)
class CA:
    """A certificate authority in ``directory``: ``cert`` and ``key`` (PEM)."""

    directory: Path
    cert: Path
    key: Path
    name: str

    def issue(self, name: str, *, dns: list[str] | tuple[str, ...] = (),
              ip: list[str] | tuple[str, ...] = (), client: bool = False) -> tuple[Path, Path]:
        """A certificate for ``name`` (its CN) naming ``dns`` names and ``ip`` addresses
        (subjectAltName), good for a server and a client (``client``: for a client
        only); returns (cert, key) paths in the CA's directory."""
        key = self.directory / f"{name}.key"
        csr = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.crt"
        ext = self.directory / f"{name}.ext"
        _key(key)
        _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr),
                 cwd=self.directory)
        alt = [f"DNS:{d}" for d in dns] + [f"IP:{a}" for a in ip]
        usage = "clientAuth" if client else "serverAuth,clientAuth"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyAgreement",
                 f"extendedKeyUsage={usage}"]
        if alt:
            lines.append(f"subjectAltName={','.join(alt)}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey",
                 str(self.key), "-CAcreateserial", "-days", DAYS, "-sha256",
                 "-extfile", str(ext), "-out", str(cert), cwd=self.directory)
        return cert, key

    def bundle(self, name: str, *, dns: list[str] | tuple[str, ...] = (),
               ip: list[str] | tuple[str, ...] = (), client: bool = False) -> Path:
        """A certificate and its key in one PEM file (what baresip's sip_certificate
        wants), issued as by :meth:`issue`."""
        cert, key = self.issue(name, dns=dns, ip=ip, client=client)
        both = self.directory / f"{name}.pem"
        both.write_text(cert.read_text() + key.read_text())
        return both


def make_ca(directory: Path, name: str = "sipbridge test CA") -> CA:
    """A new CA (self-signed, EC P-256) in ``directory`` (made if missing). Skips the test
    when the openssl CLI is not installed."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "ca.key"
    cert = directory / "ca.crt"
    _key(key)
    _openssl("req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}", "-days", DAYS,
             "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(cert),
             cwd=directory)
    return CA(directory, cert, key, name)
