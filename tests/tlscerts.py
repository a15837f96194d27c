"""Throwaway certificates for tests, made with the openssl command line tool.

``make_ca(directory)`` makes a CA (``ca.cert`` is what a client trusts);
``ca.issue("server", dns=["localhost"], ips=["127.0.0.1"])`` signs a leaf for those names
and returns its certificate and key files (PEM, EC P-256, valid one day).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr.strip()}")


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path))
    return path


@dataclass(frozen=True)
class CA:
    """A certificate authority on disk: its certificate (to trust) and key (to sign)."""

    directory: Path
    cert: Path
    key: Path

    def issue(self, name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = ()
              ) -> tuple[Path, Path]:
        """A leaf certificate for `name` with these subject alternative names, signed by
        this CA: (certificate file, key file)."""
        key = _key(self.directory / f"{name}.key")
        csr = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.crt"
        _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
        names = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        ext = self.directory / f"{name}.ext"
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n"
                       + (f"subjectAltName={','.join(names)}\n" if names else ""))
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey",
                 str(self.key), "-CAcreateserial", "-days", "1", "-sha256",
                 "-extfile", str(ext), "-out", str(cert))
        return cert, key


def make_ca(directory: Path, name: str = "sipbridge test CA") -> CA:
    """A new self-signed CA in `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = _key(directory / "ca.key")
    cert = directory / "ca.crt"
    _openssl("req", "-x509", "-new", "-key", str(key), "-subj", f"/CN={name}", "-days", "1",
             "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(cert))
    return CA(directory, cert, key)
