"""Session descriptions (RFC 4566) and the offer/answer model (RFC 3264).

Sans-IO: `parse_sdp` turns a body into a `SessionDescription` or raises `SdpError`
(400), and `SessionDescription.to_bytes` is its exact inverse. `answer_offer` answers
an offer with one audio stream (G.711, G.722 or Opus) or raises `NotAcceptable` (488); `build_offer`
makes our offer for outbound calls and re-INVITEs (hold is `Direction.SENDONLY`).
SRTP streams (RTP/SAVP) carry their keys in a=crypto lines (SDES, RFC 4568):
`parse_crypto` reads one, `redact_keys` hides them in any text that is recorded.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sipbridge.audiostream import Codec, Direction, NegotiatedAudio, SrtpKeys
from sipbridge.sip.errors import NotAcceptable, SdpError

MAX_LINES = 1000
MAX_MEDIA = 64
# Parsed bodies are kept for reuse (a peer's offer is read again for its answer and for
# its call record, and a phone or a load generator sends the same offer in many calls):
# an LRU of SDP_CACHE_SIZE bodies, each at most SDP_CACHE_BODY_MAX bytes, so that it can
# never hold more than 1 MiB of bodies. A hit is safe to share: a SessionDescription is
# frozen all the way down (frozen dataclasses, tuples, str and int).
SDP_CACHE_SIZE = 256
SDP_CACHE_BODY_MAX = 4096

# RFC 3551 6, table 4: audio payload types that need no a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
    9: ("G722", 8000), 13: ("CN", 8000), 18: ("G729", 8000),
}

# RFC 4566 5: line types we know; i u e p b z k r are read and dropped.
_KNOWN_TYPES = frozenset("vosctamiuepbzkr")
_SESSION_ONLY = frozenset("vostzruep")

Attribute = tuple[str, str | None]
Line = tuple[int, str, str]  # (line number, type letter, value)

_DIRECTIONS = frozenset(d.value for d in Direction)


@dataclass(frozen=True)
class Origin:
    """The o= line (RFC 4566 5.2)."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True)
class MediaDescription:
    """One m= section (RFC 4566 5.14), its c= and its attributes.

    `codecs` are the formats with an rtpmap or a static type, in format order;
    `direction` is resolved against the session level; other attributes stay in
    `attributes`. Formats of a non-RTP transport (udptl for T.38) are `other_formats`.
    """

    media: str
    port: int
    proto: str
    formats: tuple[int, ...]
    codecs: tuple[Codec, ...]
    connection: str | None
    direction: Direction = Direction.SENDRECV
    ptime: int | None = None
    attributes: tuple[Attribute, ...] = ()
    other_formats: tuple[str, ...] = ()

    def rejected(self) -> MediaDescription:
        """This stream as an answer rejects it (RFC 3264 6): port 0, same formats."""
        direction = self.direction.answer()
        return replace(self, port=0, connection=None, direction=direction, ptime=None,
                       attributes=())

    def _lines(self) -> list[str]:
        formats = " ".join([*map(str, self.formats), *self.other_formats])
        lines = [f"m={self.media} {self.port} {self.proto} {formats}"]
        if self.connection is not None:
            lines.append(f"c=IN {_addrtype(self.connection)} {self.connection}")
        lines += (f"a=rtpmap:{c.rtpmap()}" for c in self.codecs)
        lines += (f"a=fmtp:{c.payload_type} {c.fmtp}" for c in self.codecs if c.fmtp is not None)
        if self.ptime is not None:
            lines.append(f"a=ptime:{self.ptime}")
        lines.append(f"a={self.direction.value}")
        return lines + [_attribute_line(a) for a in self.attributes]


@dataclass(frozen=True)
class SessionDescription:
    """A whole session description (RFC 4566 5)."""

    version: int
    origin: Origin
    session_name: str
    connection: str | None
    connection_addrtype: str
    timing: tuple[int, int]
    media: tuple[MediaDescription, ...]
    attributes: tuple[Attribute, ...] = ()

    def to_bytes(self) -> bytes:
        """Serialise in RFC 4566 5 order (v, o, s, c, t, a, then each m= section), CRLF."""
        o = self.origin
        lines = [
            f"v={self.version}",
            f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} "
            f"{o.address}",
            f"s={self.session_name}",
        ]
        if self.connection is not None:
            lines.append(f"c=IN {self.connection_addrtype} {self.connection}")
        lines.append(f"t={self.timing[0]} {self.timing[1]}")
        lines += (_attribute_line(a) for a in self.attributes)
        for media in self.media:
            lines += media._lines()
        return ("\r\n".join(lines) + "\r\n").encode()


def effective_address(media: MediaDescription, session: SessionDescription) -> str | None:
    """Where the stream's peer receives RTP: media-level c= over session c= (RFC 4566 5.7)."""
    return media.connection if media.connection is not None else session.connection


def is_hold(media: MediaDescription, session: SessionDescription) -> bool:
    """Whether the describing side wants no media from us (RFC 3264 8.4): sendonly,
    inactive, or the old-style (RFC 2543) connection address 0.0.0.0."""
    return not media.direction.receives or effective_address(media, session) == "0.0.0.0"


def parse_sdp(data: bytes | bytearray | memoryview | str) -> SessionDescription:
    """Parse a session description (RFC 4566 5); raise SdpError (400) if it does not parse.

    Answers from a bounded LRU cache of earlier answers (errors are not kept)."""
    if isinstance(data, bytearray | memoryview):  # mutable: never a cache key
        data = bytes(data)
    if len(data) > SDP_CACHE_BODY_MAX:
        return _parse_sdp(data)
    return _parse_sdp_cached(data)


@functools.lru_cache(maxsize=SDP_CACHE_SIZE)
def _parse_sdp_cached(data: bytes | str) -> SessionDescription:
    return _parse_sdp(data)


def _parse_sdp(data: bytes | str) -> SessionDescription:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    sections = _sections(data)
    fields, attributes = _session_level(sections[0])
    if "o" not in fields:
        raise SdpError("SDP has no o= line")
    addrtype, connection = _connection(fields["c"]) if "c" in fields else ("IP4", None)
    inherited = next((Direction(n) for n, v in attributes if v is None and n in _DIRECTIONS), None)
    media = tuple(_media(section, inherited) for section in sections[1:])
    for section, m in zip(sections[1:], media, strict=True):
        if m.port != 0 and m.connection is None and connection is None:
            raise SdpError(f"SDP line {section[0][0]}: m= has no c= and the session has none")
    session_name = fields["s"][2] if "s" in fields else "-"
    timing = _timing(fields["t"]) if "t" in fields else (0, 0)
    origin = _origin(fields["o"])
    return SessionDescription(
        0, origin, session_name, connection, addrtype, timing, media, tuple(attributes)
    )


def _sections(data: str) -> list[list[Line]]:
    """The lines, checked as type=value, in sections: the session's, then one per m=."""
    raw = data.split("\n")
    while raw and raw[-1] in ("", "\r"):
        raw.pop()
    if len(raw) > MAX_LINES:
        raise SdpError(f"SDP has {len(raw)} lines, more than {MAX_LINES}")
    sections: list[list[Line]] = [[]]
    for number, text in enumerate(raw, 1):
        kind, value = text[:1], text.removesuffix("\r")[2:]
        if text[1:2] != "=" or not "a" <= kind <= "z":
            raise SdpError(f"SDP line {number} is not type=value")
        if kind not in _KNOWN_TYPES:
            raise SdpError(f"SDP line {number} has unknown type {kind!r}")
        if kind == "m":
            if len(sections) > MAX_MEDIA:
                raise SdpError(f"SDP has more than {MAX_MEDIA} m= lines")
            sections.append([])
        elif kind in _SESSION_ONLY and len(sections) > 1:
            raise SdpError(f"SDP line {number}: {kind}= is not allowed after m=")
        sections[-1].append((number, kind, value))
    return sections


def _session_level(head: list[Line]) -> tuple[dict[str, Line], list[Attribute]]:
    """The session-level fields (the first of each type) and attributes, after v=0."""
    fields, attributes = dict[str, Line](), list[Attribute]()
    if not head or head[0][1] != "v":
        raise SdpError("SDP does not start with v=")
    if head[0][2] != "0":
        raise SdpError(f"SDP version {head[0][2]!r} is not supported (v=0)")
    for line in head[1:]:
        if line[1] == "a":
            attributes.append(_attribute(line[2]))
        elif line[1] in "vosc" and line[1] in fields:
            raise SdpError(f"SDP line {line[0]} is a second {line[1]}= line")
        else:
            fields.setdefault(line[1], line)
    return fields, attributes


def _rtpmaps(attrs: list[tuple[int, str, str | None]], formats: tuple[int, ...]
             ) -> tuple[dict[int, Codec], set[int]]:
    """The first usable rtpmap of each listed format, and which attributes they were."""
    rtpmaps: dict[int, Codec] = {}
    consumed: set[int] = set()
    for index, (line_no, name, arg) in enumerate(attrs):
        if name == "rtpmap" and arg is not None:
            try:
                codec = _rtpmap(line_no, arg)
            except SdpError:
                continue  # no codec we could use (RFC 4475 has `a=rtpmap:31 LPC`): kept as is
            if codec.payload_type in formats and codec.payload_type not in rtpmaps:
                rtpmaps[codec.payload_type] = codec
                consumed.add(index)
    return rtpmaps, consumed


def _media(section: list[Line], inherited: Direction | None) -> MediaDescription:
    """One m= section (RFC 4566 5.14) with its rtpmap, fmtp, ptime and direction (RFC 4566 6)."""
    number, _, value = section[0]
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"SDP line {number}: m= needs media, port, proto and at least one format")
    kind, port_text, proto, *tokens = parts
    port = _int(number, "port", port_text, 65535)
    rtp = "RTP/" in proto.upper()
    formats = tuple(_int(number, "payload type", t, 127) for t in tokens) if rtp else ()
    if len(set(formats)) != len(formats):
        raise SdpError(f"SDP line {number}: a payload type is listed twice")
    connection: str | None = None
    attrs: list[tuple[int, str, str | None]] = []
    for line in section[1:]:
        if line[1] == "c" and connection is not None:
            raise SdpError(f"SDP line {line[0]} is a second c= line in one m= section")
        if line[1] == "c":
            connection = _connection(line)[1]
        elif line[1] == "a":
            attrs.append((line[0], *_attribute(line[2])))
    # rtpmaps first: an fmtp for a format with no rtpmap is kept as a plain attribute.
    rtpmaps, consumed = _rtpmaps(attrs, formats) if rtp else ({}, set())
    mapped = {pt for pt in formats if pt in rtpmaps or pt in STATIC_PAYLOAD_TYPES}
    fmtps: dict[int, str] = {}
    direction: Direction | None = None
    ptime: int | None = None
    kept: list[Attribute] = []
    for line_no, name, arg in (a for i, a in enumerate(attrs) if i not in consumed):
        if name == "fmtp" and rtp and arg is not None:
            pt_text, _, params = arg.partition(" ")
            pt = _int(line_no, "payload type", pt_text, 127)
            if pt in mapped and pt not in fmtps:
                fmtps[pt] = params.strip()
                continue
        elif name in _DIRECTIONS and arg is None:
            if direction is not None:
                raise SdpError(f"SDP line {line_no} is a second direction attribute")
            direction = Direction(name)
            continue
        elif name == "ptime":
            ptime = _int(line_no, "ptime", arg or "")
            continue
        kept.append((name, arg))
    codecs = tuple(
        replace(rtpmaps.get(pt) or Codec(pt, *STATIC_PAYLOAD_TYPES[pt]), fmtp=fmtps.get(pt))
        for pt in formats
        if pt in mapped
    )
    return MediaDescription(
        kind, port, proto, formats, codecs, connection,
        direction or inherited or Direction.SENDRECV,
        ptime, tuple(kept), () if rtp else tuple(tokens),
    )


def _int(number: int, what: str, text: str, maximum: int | None = None) -> int:
    if not (text.isascii() and text.isdigit()):
        raise SdpError(f"SDP line {number}: {what} {text!r} is not a number")
    if maximum is not None and int(text) > maximum:
        raise SdpError(f"SDP line {number}: {what} {text} is out of range (0-{maximum})")
    return int(text)


def _origin(line: Line) -> Origin:
    """RFC 4566 5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>."""
    parts = line[2].split()
    if len(parts) != 6:
        raise SdpError(f"SDP line {line[0]}: o= needs 6 fields, has {len(parts)}")
    user, sid, version, nettype, addrtype, address = parts
    sid_n, version_n = _int(line[0], "session id", sid), _int(line[0], "session version", version)
    return Origin(user, sid_n, version_n, nettype, addrtype, address)


def _connection(line: Line) -> tuple[str, str | None]:
    """RFC 4566 5.7: c=IN <IP4|IP6> <address>; returns (addrtype, address)."""
    parts = line[2].split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"SDP line {line[0]}: c= is not 'IN IP4|IP6 <address>'")
    address = parts[2]
    if not address.isascii() or not address.isprintable():
        raise SdpError(f"SDP line {line[0]}: c= address has a control character")
    return parts[1], address


def _timing(line: Line) -> tuple[int, int]:
    """RFC 4566 5.9: t=<start-time> <stop-time>."""
    parts = line[2].split()
    if len(parts) != 2:
        raise SdpError(f"SDP line {line[0]}: t= needs a start and a stop time")
    return _int(line[0], "start time", parts[0]), _int(line[0], "stop time", parts[1])


def _rtpmap(number: int, arg: str) -> Codec:
    """RFC 4566 6: a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]."""
    pt_text, _, encoding = arg.partition(" ")
    pieces = encoding.strip().split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpError(f"SDP line {number}: rtpmap {arg!r} is not '<pt> <name>/<rate>[/<ch>]'")
    pt, rate = _int(number, "payload type", pt_text, 127), _int(number, "clock rate", pieces[1])
    return Codec(pt, pieces[0], rate, _int(number, "channels", pieces[2]) if pieces[2:] else 1)


def _attribute(value: str) -> Attribute:
    name, colon, arg = value.partition(":")
    return (name, arg if colon else None)


def _attribute_line(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def answer_offer(
    offer: SessionDescription, *, local_address: str, local_port: int, session_id: int,
    session_version: int, supported: Sequence[str] = ("PCMU", "PCMA"),
    telephone_event: bool = True, ptime: int = 20,
    srtp: str = "off", secure_signalling: bool = False, srtp_over_cleartext: bool = False,
    srtp_key: bytes | None = None,
) -> tuple[SessionDescription, NegotiatedAudio]:
    """Answer an offer with one audio stream (RFC 3264 6), or raise NotAcceptable (488).

    The first audio stream with a nonzero port, a profile `srtp` allows and a codec in
    `supported` is accepted with the first of `supported` (our preference, the operator's
    `codecs`) that it offers, plus telephone-event (RFC 4733) if offered; every other m=
    line is rejected with port 0 (RFC 3264 6: the answer has the same m= lines in the
    same order). Codecs are PCMU/8000, PCMA/8000 and G722/8000 (RFC 3551 4.5.2: 16 kHz
    audio on an 8000 clock) in mono, and opus/48000/2 (RFC 7587 7) on its dynamic type.

    `srtp` ("off", "optional", "required") says which of RTP/AVP and RTP/SAVP (RFC 3711,
    keys by SDES, RFC 4568) it takes; SAVP only when `secure_signalling` (TLS) or
    `srtp_over_cleartext`. An SRTP answer carries `srtp_key` (ours; a new one if None).
    """
    protos = _protos(srtp, secure_signalling or srtp_over_cleartext)
    wanted = [name.lower() for name in supported if name.lower() not in ("telephone-event",
                                                                         "cn")]
    found = next((
        (index, m, codec)
        for index, m in enumerate(offer.media)
        if m.media == "audio" and m.port != 0 and m.proto.upper() in protos
        for codec in [_preferred(m.codecs, wanted)] if codec is not None
    ), None)
    if found is None:
        raise NotAcceptable(_srtp_refusal(offer, srtp, protos)
                            or _why_not(offer, supported, protos))
    index, offered, codec = found
    answered = _answer_codec(codec)
    events = sorted((c for c in offered.codecs if c.name.lower() == "telephone-event"
                     and c.clock_rate in (codec.clock_rate, 8000)),
                    key=lambda c: c.clock_rate != codec.clock_rate)  # the codec's clock first
    event = events[0] if events and telephone_event else None
    remote = effective_address(offered, offer)
    if remote is None:
        raise NotAcceptable("the offered audio stream has no connection address")
    theirs = offered.direction
    if remote == "0.0.0.0":  # RFC 3264 8.4: send nothing there, whatever the attribute says
        theirs = Direction.from_flags(sends=theirs.sends, receives=False)
    direction = theirs.answer()
    audio_ptime = offered.ptime if offered.ptime is not None else ptime
    codecs = (answered,) if event is None else (answered, event)
    formats = tuple(c.payload_type for c in codecs)
    keys = _answer_crypto(offered, srtp_key) if offered.proto.upper() == SAVP else None
    ours = MediaDescription(
        "audio", local_port, offered.proto, formats, codecs, None, direction, audio_ptime,
        () if keys is None else (("crypto", _crypto_value(keys)),),
    )
    media = tuple(ours if i == index else m.rejected() for i, m in enumerate(offer.media))
    event_pt = None if event is None else event.payload_type
    negotiated = NegotiatedAudio(codec, event_pt, remote, offered.port, direction, audio_ptime,
                                 keys)
    return _local_session(local_address, session_id, session_version, media), negotiated


def read_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
    """What an answer to our offer settled (RFC 3264 7); NotAcceptable if it took nothing."""
    offered = {c.payload_type: c for m in offer.media if m.media == "audio" for c in m.codecs}
    for m in answer.media:
        if m.media != "audio" or m.port == 0:
            continue
        voice = [c for c in m.codecs if c.payload_type in offered
                 and c.name.lower() not in ("telephone-event", "cn")]
        remote = effective_address(m, answer)
        if not voice or remote is None:
            break
        events = [c.payload_type for c in m.codecs if c.name.lower() == "telephone-event"]
        return NegotiatedAudio(voice[0], events[0] if events else None, remote, m.port,
                               m.direction.answer(), m.ptime or 20,
                               _answered_crypto(offer, m))
    raise NotAcceptable("the answer accepted no audio codec of our offer")


def build_offer(
    *, local_address: str, local_port: int, session_id: int, session_version: int,
    codecs: Sequence[str] = ("PCMU", "PCMA"), telephone_event_pt: int | None = 101,
    direction: Direction = Direction.SENDRECV, ptime: int = 20, srtp_key: bytes | None = None,
) -> SessionDescription:
    """Our offer (RFC 3264 5): one audio stream with static-type codecs in preference
    order and telephone-event (RFC 4733 7.1); hold is `direction=SENDONLY` (RFC 3264 8.4).
    With `srtp_key` the stream is RTP/SAVP with that key in an a=crypto line (RFC 4568)."""
    by_name = {name.lower(): pt for pt, (name, _) in STATIC_PAYLOAD_TYPES.items()}
    unknown = [name for name in codecs if name.lower() not in ("pcmu", "pcma", "g722", "opus")]
    if unknown or not codecs:
        raise ValueError(f"codecs must be PCMU, PCMA, G722 or opus, got {list(codecs)!r}")
    opus_pt = OPUS_PT if telephone_event_pt != OPUS_PT else OPUS_PT - 1
    chosen = [Codec(opus_pt, "opus", 48000, 2, OPUS_FMTP) if n.lower() == "opus"
              else Codec(by_name[n.lower()], *STATIC_PAYLOAD_TYPES[by_name[n.lower()]])
              for n in codecs]
    if telephone_event_pt is not None:
        if not 96 <= telephone_event_pt <= 127:
            raise ValueError(f"telephone-event payload type {telephone_event_pt} is not dynamic")
        chosen.append(Codec(telephone_event_pt, "telephone-event", 8000, fmtp="0-16"))
    formats = tuple(c.payload_type for c in chosen)
    media = MediaDescription(
        "audio", local_port, "RTP/AVP", formats, tuple(chosen), None, direction, ptime
    )
    if srtp_key is not None:
        crypto = _crypto_value(SrtpKeys(SRTP_SUITES[0], 1, srtp_key, b""))
        media = replace(media, proto=SAVP, attributes=(("crypto", crypto),))
    return _local_session(local_address, session_id, session_version, (media,))


def _runs(codec: Codec, name: str) -> bool:
    """Whether an offered format is the codec `name` as we run it."""
    if codec.name.lower() != name:
        return False
    if name == "opus":  # RFC 7587 7: always opus/48000/2, whatever is sent
        return codec.clock_rate == 48000 and codec.channels == 2
    return name in ("pcmu", "pcma", "g722") and codec.clock_rate == 8000 and codec.channels == 1


def _preferred(offered: Sequence[Codec], wanted: Sequence[str]) -> Codec | None:
    """The first of our `wanted` codecs (by name, lower case) the offer has."""
    for name in wanted:
        for codec in offered:
            if _runs(codec, name):
                return codec
    return None


OPUS_PT = 111  # our dynamic payload type for opus when we offer
# What we ask of an Opus sender (RFC 7587 7): mono, in-band FEC welcome. No
# maxplaybackrate: we decode at 24 kHz whatever bandwidth the sender codes.
OPUS_FMTP = "stereo=0;useinbandfec=1"


def _answer_codec(offered: Codec) -> Codec:
    """The chosen format as our answer lists it: Opus with our own fmtp (RFC 7587 7:
    the parameters say what the answerer wants to receive), FEC only if the offerer
    used the parameter itself; others as offered."""
    if offered.name.lower() != "opus":
        return offered
    fmtp = "stereo=0"
    params = {p.split("=", 1)[0].strip().lower(): p.split("=", 1)[-1].strip()
              for p in (offered.fmtp or "").split(";") if "=" in p}
    if params.get("useinbandfec") == "1":
        fmtp += ";useinbandfec=1"
    return replace(offered, fmtp=fmtp)


def _local_session(
    address: str, session_id: int, session_version: int, media: tuple[MediaDescription, ...]
) -> SessionDescription:
    addrtype = _addrtype(address)
    origin = Origin("sipbridge", session_id, session_version, "IN", addrtype, address)
    return SessionDescription(0, origin, "sipbridge", address, addrtype, (0, 0), media)


def _why_not(offer: SessionDescription, supported: Sequence[str],
             accepted: frozenset[str] = frozenset({"RTP/AVP"})) -> str:
    """The 488 reason: what ruled the offer out, in the order `answer_offer` searches."""
    audio = [m for m in offer.media if m.media == "audio"]
    if not audio:
        kinds = ", ".join(m.media for m in offer.media) or "none"
        return f"no audio stream offered (offered media: {kinds})"
    live = [m for m in audio if m.port != 0]
    if not live:
        return "every offered audio stream is disabled (port 0)"
    avp = [m for m in live if m.proto.upper() in accepted]
    if not avp:
        protos = ", ".join(m.proto for m in live)
        return f"no RTP/AVP audio stream: offered {protos} (only RTP/AVP is supported, not SRTP)"
    named = [({c.payload_type: f"{c.name}/{c.clock_rate}" for c in m.codecs}, m) for m in avp]
    offered = ", ".join(n.get(pt, f"payload type {pt}") for n, m in named for pt in m.formats)
    return f"no common audio codec: offered {offered}; supported {', '.join(supported)}"


# ---- SRTP keys by SDES (RFC 4568) ------------------------------------------------

SAVP = "RTP/SAVP"
# RFC 4568 6.2: the suites we accept, in our preference order (sipbridge.media.srtp
# has a libsrtp profile for each).
SRTP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
SRTP_MODES = ("off", "optional", "required")
_KEY_SALT = 30  # 16-octet master key + 14-octet master salt for the AES_CM_128 suites
_SUITE_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,39}")  # RFC 4568 suites: upper case
_INLINE = re.compile(r"inline:[^\s|;]*", re.IGNORECASE)


@dataclass(frozen=True)
class CryptoAttribute:
    """One a=crypto line (RFC 4568 9.1): tag, suite, key||salt, lifetime, MKI; its repr
    shows no key."""

    tag: int
    suite: str
    key: bytes
    lifetime: str | None = None
    mki: str | None = None
    session_params: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"CryptoAttribute(tag={self.tag}, suite={self.suite!r}, key=<redacted>)"


def redact_keys(text: str) -> str:
    """Text with every SDES key (`inline:...`, RFC 4568) replaced by `inline:<redacted>`:
    what the logs, the timeline, the store and everything fed from them may show of a
    SIP message or a session description."""
    # Most messages have no key: two C scans, not the regex's. (Not ASCII: the regex
    # alone, as IGNORECASE also takes the dotted and dotless i for an i.)
    if text.isascii() and "inline:" not in text.lower():
        return text
    return _INLINE.sub("inline:<redacted>", text)


def new_srtp_key() -> bytes:
    """A fresh master key and salt (RFC 4568 6.2.1) from the system's CSPRNG."""
    return secrets.token_bytes(_KEY_SALT)


def parse_crypto(value: str) -> CryptoAttribute:
    """An a=crypto value: `<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len] [params]`;
    NotAcceptable (488) naming the line, its key redacted, if it is malformed."""
    parts = value.split()

    def bad(why: str) -> NotAcceptable:
        # Named by its tag and suite where they look like them: never a key (a garbled
        # line may have one anywhere), never what would break the Warning header.
        tag = parts[0] if parts and parts[0].isascii() and parts[0].isdigit() else "?"
        suite = parts[1] if len(parts) > 1 and _SUITE_NAME.fullmatch(parts[1]) else "?"
        return NotAcceptable(f"malformed a=crypto:{tag[:9]} {suite} ({why})")

    if len(parts) < 3:
        raise bad("needs a tag, a suite and key parameters")
    tag_text, suite, key_params, *params = parts
    if not (tag_text.isascii() and tag_text.isdigit()) or len(tag_text) > 9:
        raise bad("the tag is not a number of at most 9 digits")
    if ";" in key_params:
        raise bad("more than one key (several keys need an MKI, which is not supported)")
    method, colon, info = key_params.partition(":")
    if method.lower() != "inline" or not colon:
        raise bad("the key method is not inline:")
    key_salt, *extra = info.split("|")
    try:
        key = base64.b64decode(key_salt, validate=True)
    except (binascii.Error, ValueError):
        raise bad("the key is not base64") from None
    lifetime = mki = None
    for item in extra:
        if ":" in item and mki is None:
            mki = item
        elif ":" not in item and item and lifetime is None and mki is None:
            lifetime = item
        else:
            raise bad("unexpected key parameter")
    return CryptoAttribute(int(tag_text), suite, key, lifetime, mki, tuple(params))


def _protos(srtp: str, keys_safe: bool) -> frozenset[str]:
    """The audio transports an answer may take, by the `srtp` mode and whether keys may
    travel in this offer's signalling."""
    if srtp not in SRTP_MODES:
        raise ValueError(f"srtp must be one of {SRTP_MODES}, got {srtp!r}")
    savp = srtp != "off" and keys_safe
    if srtp == "required":
        return _SAVP_ONLY if savp else _NO_PROTOS
    return _AVP_OR_SAVP if savp else _AVP_ONLY


_SAVP_ONLY = frozenset({SAVP})
_AVP_ONLY = frozenset({"RTP/AVP"})
_AVP_OR_SAVP = _AVP_ONLY | _SAVP_ONLY
_NO_PROTOS: frozenset[str] = frozenset()


def _srtp_refusal(offer: SessionDescription, srtp: str, protos: frozenset[str]) -> str | None:
    """The 488 reason when SRTP policy, not codecs, ruled the offer out."""
    live = {m.proto.upper() for m in offer.media if m.media == "audio" and m.port != 0}
    if not live or live & protos:
        return None
    if srtp != "off" and SAVP in live and SAVP not in protos:
        return ("SRTP keys offered over cleartext signalling are refused: they would travel "
                "in the clear (use TLS, or srtp_over_cleartext for lab use)")
    if srtp == "required" and "RTP/AVP" in live:
        return "SRTP required: only RTP/SAVP audio is accepted, RTP/AVP was offered"
    return None


def _answer_crypto(offered: MediaDescription, key: bytes | None) -> SrtpKeys:
    """The first a=crypto of the offered stream with a suite we support (RFC 4568 7.1.1),
    our key for it; NotAcceptable if a line is malformed or none is usable."""
    lines = [parse_crypto(v or "") for n, v in offered.attributes if n == "crypto"]
    if not lines:
        raise NotAcceptable("the RTP/SAVP stream has no a=crypto line (SDES keys)")
    for crypto in lines:
        if crypto.suite in SRTP_SUITES and crypto.mki is None and not crypto.session_params:
            if len(crypto.key) != _KEY_SALT:
                raise NotAcceptable(f"malformed a=crypto:{crypto.tag} {crypto.suite} "
                                    f"(the key and salt are {len(crypto.key)} octets, "
                                    f"not {_KEY_SALT})")
            ours = key if key is not None else new_srtp_key()
            return SrtpKeys(crypto.suite, crypto.tag, ours, crypto.key)
    suites = ", ".join(c.suite if _SUITE_NAME.fullmatch(c.suite) else "?" for c in lines)[:200]
    raise NotAcceptable(f"no usable a=crypto: offered {suites} (supported {', '.join(SRTP_SUITES)},"
                   " without MKI or session parameters)")


def _answered_crypto(offer: SessionDescription, answer: MediaDescription) -> SrtpKeys | None:
    """The keys an answer to our SRTP offer settled: its a=crypto's tag names ours. An
    answer in clear to an SRTP offer is refused (no silent downgrade; RFC 3264 6)."""
    offered = [m for m in offer.media if m.media == "audio" and m.proto.upper() == SAVP]
    if answer.proto.upper() != SAVP:
        if offered:
            raise NotAcceptable(f"the answer took {answer.proto} for our RTP/SAVP offer")
        return None
    ours = {c.tag: c for m in offered
            for c in (parse_crypto(v or "") for n, v in m.attributes if n == "crypto")}
    for name, value in answer.attributes:
        if name == "crypto":
            theirs = parse_crypto(value or "")
            mine = ours.get(theirs.tag)
            if mine is not None and theirs.suite == mine.suite and len(theirs.key) == _KEY_SALT:
                return SrtpKeys(mine.suite, mine.tag, mine.key, theirs.key)
    raise NotAcceptable("the SRTP answer has no a=crypto line matching our offer")


def _crypto_value(keys: SrtpKeys) -> str:
    return f"{keys.tag} {keys.suite} inline:{base64.b64encode(keys.local_key).decode()}"
