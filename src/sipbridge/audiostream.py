"""The audio stream as signalling and media both know it: its RTP payload formats
(`Codec`), its direction (`Direction`), and what an offer/answer settled for it
(`NegotiatedAudio`). SDP (`sipbridge.sip.sdp`) reads and writes them; the media plane
(`sipbridge.media`) runs a stream by them without knowing SDP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Direction(enum.Enum):
    """Stream direction attributes (RFC 4566 6, RFC 3264 5.1), from the describing side."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def answer(self) -> Direction:
        """The direction an answerer gives a stream offered with this one (RFC 3264 6.1)."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)

@dataclass(frozen=True)
class Codec:
    """One RTP payload format: a=rtpmap plus a=fmtp (RFC 4566 6), or a static type."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def rtpmap(self) -> str:
        encoding = f"{self.payload_type} {self.name}/{self.clock_rate}"
        return encoding if self.channels == 1 else f"{encoding}/{self.channels}"

@dataclass(frozen=True)
class SrtpKeys:
    """The SDES keys (RFC 4568) of an SRTP stream: its crypto suite, the a=crypto tag
    the answer took, and each side's master key and salt. Its repr shows no key."""

    suite: str
    tag: int
    local_key: bytes  # ours: protects what we send
    remote_key: bytes  # the peer's: checks and decrypts what it sends

    def __repr__(self) -> str:
        return f"SrtpKeys(suite={self.suite!r}, tag={self.tag}, keys=<redacted>)"

@dataclass(frozen=True)
class NegotiatedAudio:
    """What an answer settled for the audio stream; `direction` is ours, as answered."""

    codec: Codec
    telephone_event_pt: int | None
    remote_address: str
    remote_port: int
    direction: Direction
    ptime: int
    srtp: SrtpKeys | None = None  # SDES keys (RFC 4568) when the stream is RTP/SAVP

