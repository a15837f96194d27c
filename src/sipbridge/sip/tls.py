"""SIP over TLS (RFC 3261 26.2, RFC 5630): the contexts and the handshake's failures.

The transport (`sip.transport`) accepts a TLS connection as plain TCP first, so that the
connection limits and the rate limit refuse it before any cryptography, then upgrades it
(`loop.start_tls`) within `handshake_timeout`. What goes wrong in a handshake (a client
that never finishes it, bytes that are not TLS, a certificate that does not verify) is
counted here and logged with the peer and the reason, one line per 10 s at most.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

log = logging.getLogger("sipbridge.transport")

# TLS 1.2 suites with forward secrecy and an AEAD cipher only; TLS 1.3's suites are
# all of that already and are set apart by OpenSSL (this string does not touch them).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
LOG_INTERVAL = 10.0  # seconds between two log lines about failed handshakes


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """What the TLS listener and outgoing TLS connections are told."""

    cert: str | None = None  # our certificate chain (PEM), for the listener
    key: str | None = None  # its private key (PEM)
    ca: str | None = None  # the trust store (PEM): clients' certificates, and servers'
    verify_client: bool = False  # demand a client certificate signed by `ca`
    verify: bool = True  # verify servers we connect to, by name
    handshake_timeout: float = 10.0


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """The listener's context: our certificate, TLS 1.2 or later, strong ciphers, and a
    client certificate demanded and verified against `ca` when `verify_client`.
    ValueError names what is missing; ssl.SSLError/OSError say what could not be read."""
    if not config.cert or not config.key:
        raise ValueError("sip_tls needs tls_cert and tls_key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx)
    ctx.load_cert_chain(config.cert, config.key)
    if config.verify_client:
        if not config.ca:
            raise ValueError("tls_verify_client needs tls_ca (the CA that signs clients)")
        ctx.load_verify_locations(config.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(config: TlsConfig) -> ssl.SSLContext:
    """The context for connections we open: the server's certificate verified by name
    against `ca` (else the system's trust store), unless `verify` is off. Our own
    certificate is offered when there is one (servers that want mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    if config.verify:
        if config.ca:
            ctx.load_verify_locations(config.ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.cert and config.key:
        ctx.load_cert_chain(config.cert, config.key)
    return ctx


def failure_reason(exc: BaseException) -> str:
    """A handshake's failure in a few words: OpenSSL's reason, or what happened."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate does not verify: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        return "no handshake within the bound"
    return str(exc) or exc.__class__.__name__


class HandshakeFailures:
    """Failed TLS handshakes: counted, and logged with the peer and the reason at most
    once per LOG_INTERVAL (the line says how many failed since the last one)."""

    def __init__(self) -> None:
        self.total = 0
        self._logged = 0  # the count when the last line was logged
        self._log_at = -LOG_INTERVAL

    def failed(self, peer: str, reason: str, now: float, *, inbound: bool = True) -> None:
        self.total += 1
        if now - self._log_at < LOG_INTERVAL:
            return
        since = self.total - self._logged
        way = "from" if inbound else "to"
        more = f" ({since - 1} not logged since the last line)" if since > 1 else ""
        log.warning("TLS handshake %s %s failed: %s; %d failed in all%s",
                    way, peer, reason, self.total, more)
        self._logged = self.total
        self._log_at = now
