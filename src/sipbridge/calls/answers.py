"""The SDP answers a call gives, from templates: callers that send the same offer (a
carrier's or a load generator's every call) get the same answer but for three numbers, the
session id and version on the o= line and our RTP port on the accepted m= line. The first
such offer is answered in full (`sipbridge.sip.sdp.answer_offer`); the answer is kept as
the bytes around those three numbers, with what it settled (`NegotiatedAudio`), and the
next ones are filled in. Answers with SDES keys (RTP/SAVP) are never kept: each carries
its own key."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sipbridge.audiostream import NegotiatedAudio
from sipbridge.sip.sdp import answer_offer, parse_sdp

ANSWER_CACHE_SIZE = 128  # offers kept (the least recently used goes first)
ANSWER_OFFER_MAX = 2048  # bytes: a longer offer is answered afresh each time, never kept


@dataclass(frozen=True, slots=True)
class AnswerTemplate:
    """An answer but for its session id, session version and RTP port: `head` + id + " "
    + version + `middle` + port + `tail`."""

    head: bytes
    middle: bytes
    tail: bytes
    audio: NegotiatedAudio

    def fill(self, session_id: int, session_version: int, port: int) -> bytes:
        return b"%s%d %d%s%d%s" % (self.head, session_id, session_version, self.middle, port,
                                   self.tail)


def _template(answer: bytes, audio: NegotiatedAudio) -> AnswerTemplate | None:
    """Split an answer made with a nonzero port into its template, or None when it is not
    of the shape `answer_offer` makes (then it is not kept)."""
    lines = answer.split(b"\r\n")
    if len(lines) < 3 or not lines[1].startswith(b"o="):
        return None
    origin = lines[1].split(b" ")
    # The one m= line with a port: the accepted stream (RFC 3264 6: the others are 0).
    accepted = [i for i, line in enumerate(lines)
                if line.startswith(b"m=") and line.split(b" ", 2)[1:2] != [b"0"]]
    if len(origin) < 4 or len(accepted) != 1:
        return None
    m_line = lines[accepted[0]].split(b" ", 2)
    if len(m_line) != 3:
        return None
    head = b"\r\n".join(lines[:1]) + b"\r\n" + origin[0] + b" "
    middle = (b" " + b" ".join(origin[3:]) + b"\r\n"
              + b"".join(line + b"\r\n" for line in lines[2:accepted[0]]) + m_line[0] + b" ")
    tail = b" " + m_line[2] + b"\r\n" + b"\r\n".join(lines[accepted[0] + 1:])
    return AnswerTemplate(head, middle, tail, audio)


class AnswerCache:
    """`answer` as `answer_offer` then `to_bytes` would, from a bounded LRU of templates
    keyed by the offer's bytes and everything else that shapes the answer."""

    def __init__(self, size: int = ANSWER_CACHE_SIZE, offer_max: int = ANSWER_OFFER_MAX
                 ) -> None:
        self.size = size
        self.offer_max = offer_max
        self._templates: OrderedDict[tuple[object, ...], AnswerTemplate] = OrderedDict()

    def __len__(self) -> int:
        return len(self._templates)

    def answer(self, offer: bytes, *, local_address: str, local_port: int, session_id: int,
               session_version: int, supported: Sequence[str], srtp: str,
               secure_signalling: bool, srtp_over_cleartext: bool,
               srtp_key: bytes | None) -> tuple[bytes, NegotiatedAudio]:
        """The answer's bytes and what it settled; SipError (NotAcceptable, 488; SdpError,
        400) as `answer_offer` and `parse_sdp` raise them."""
        if (srtp_key is not None or type(offer) is not bytes or len(offer) > self.offer_max
                or local_port <= 0):
            return self._fresh(offer, local_address, local_port, session_id, session_version,
                               supported, srtp, secure_signalling, srtp_over_cleartext,
                               srtp_key)
        key = (offer, local_address, tuple(supported), srtp, secure_signalling,
               srtp_over_cleartext)
        templates = self._templates
        template = templates.get(key)
        if template is not None:
            templates.move_to_end(key)
            return template.fill(session_id, session_version, local_port), template.audio
        answer, audio = self._fresh(offer, local_address, local_port, session_id,
                                    session_version, supported, srtp, secure_signalling,
                                    srtp_over_cleartext, None)
        if audio.srtp is None:
            made = _template(answer, audio)
            # Kept only if it gives back this very answer.
            if made is not None and made.fill(session_id, session_version,
                                              local_port) == answer:
                templates[key] = made
                while len(templates) > self.size:
                    templates.popitem(last=False)
        return answer, audio

    @staticmethod
    def _fresh(offer: bytes, local_address: str, local_port: int, session_id: int,
               session_version: int, supported: Sequence[str], srtp: str,
               secure_signalling: bool, srtp_over_cleartext: bool,
               srtp_key: bytes | None) -> tuple[bytes, NegotiatedAudio]:
        answer, audio = answer_offer(
            parse_sdp(offer), local_address=local_address, local_port=local_port,
            session_id=session_id, session_version=session_version, srtp=srtp,
            secure_signalling=secure_signalling, srtp_over_cleartext=srtp_over_cleartext,
            srtp_key=srtp_key, supported=supported)
        return answer.to_bytes(), audio
