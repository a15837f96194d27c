"""Throwaway certificates for the TLS tests: a CA made in a test's own directory, and
server or client certificates it signs, by Debian's openssl command.

    ca = make_ca(tmp_path)
    cert, key = ca.issue("gateway", dns=("localhost",), ips=("127.0.0.1", "::1"))
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass(frozen=True)
class CA:
    """A certificate authority whose certificate is `cert` (PEM)."""

    directory: Path
    cert: Path
    key: Path

    def issue(self, name: str, *, dns: Sequence[str] = (), ips: Sequence[str] = (),
              client: bool = False) -> tuple[Path, Path]:
        """A certificate (PEM) and its key for `name`, with these subject alternative
        names, signed by this CA; `client`: for TLS client authentication as well."""
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        csr, ext = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        names = [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips]
        usage = "serverAuth,clientAuth" if client else "serverAuth"
        lines = [f"extendedKeyUsage={usage}", "basicConstraints=CA:FALSE"]
        if names:
            lines.append("subjectAltName=" + ",".join(names))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
                 cwd=self.directory)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey",
                 str(self.key), "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile",
                 str(ext), "-out", str(cert), cwd=self.directory)
        return cert, key


def make_ca(directory: Path, name: str = "sipbridge test CA") -> CA:
    """A new CA in `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in name)
    cert, key = directory / f"{slug}.crt", directory / f"{slug}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", DAYS, "-subj",
             f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return CA(directory, cert, key)
