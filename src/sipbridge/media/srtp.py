"""SRTP (RFC 3711) for one call, on libsrtp through pylibsrtp.

One `SrtpContext` per stream: our master key protects what we send (RTP and RTCP),
the peer's checks and decrypts what it sends. libsrtp keeps the replay window; a packet
that fails (bad tag, wrong key, replay) raises `SrtpDrop` with the reason to count it by.
"""

from __future__ import annotations

import pylibsrtp

from sipbridge.audiostream import SrtpKeys
from sipbridge.media.rtp import RtpError

# RFC 4568 6.2: the suites we offer and accept, in our preference order.
PROFILES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
REPLAY_WINDOW = 128  # packets (RFC 3711 3.3.2 asks at least 64)


class SrtpDrop(RtpError):
    """A packet SRTP refused; `reason` is its drop counter: srtp_auth or srtp_replay."""


class SrtpContext:
    """Protect and unprotect one call's RTP and RTCP with its negotiated keys."""

    def __init__(self, keys: SrtpKeys) -> None:
        profile = PROFILES[keys.suite]
        policy = pylibsrtp.Policy
        outbound = policy(key=keys.local_key, ssrc_type=policy.SSRC_ANY_OUTBOUND,
                          srtp_profile=profile)
        inbound = policy(key=keys.remote_key, ssrc_type=policy.SSRC_ANY_INBOUND,
                         srtp_profile=profile)
        inbound.window_size = REPLAY_WINDOW
        self.keys = keys
        self._tx = pylibsrtp.Session(outbound)
        self._rx = pylibsrtp.Session(inbound)

    def protect(self, packet: bytes) -> bytes:
        return self._tx.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._tx.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes:
        """The RTP packet in clear, or SrtpDrop."""
        try:
            return self._rx.unprotect(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpDrop(_reason(exc)) from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """The RTCP packet in clear, or SrtpDrop."""
        try:
            return self._rx.unprotect_rtcp(packet)
        except (pylibsrtp.Error, ValueError) as exc:
            raise SrtpDrop(_reason(exc)) from None


def _reason(exc: Exception) -> str:
    # A wrong key and a forged or damaged packet fail alike: the tag does not match.
    # libsrtp's replay errors: "replay check failed (...)", "packet index is too old ...".
    text = str(exc)
    return "srtp_replay" if "replay" in text or "too old" in text else "srtp_auth"
