"""The voice codecs a call can run, behind one interface the media session uses alike.

- G.711 PCMU/PCMA (RFC 3551 4.5.14): our own tables (`g711`), 8 kHz, stateless.
- G.722 (RFC 3551 4.5.2): FFmpeg's coder through PyAV, 16 kHz audio on an RTP clock of
  8000 (the RFC keeps the clock rate G.711's by mistake, and everyone follows it), so a
  20 ms frame is 320 samples, 160 octets and 160 timestamp units.
- Opus (RFC 7587): libopus through ctypes, always `opus/48000/2` in SDP and on a 48 kHz
  RTP clock (960 units a 20 ms frame), but coded here in mono at 24 kHz, the model side's
  rate: libopus decodes and encodes at 8, 12, 16, 24 or 48 kHz itself, so the model side
  gets its rate with no resampling at all. In-band FEC (RFC 7587 6.1 `useinbandfec=1`)
  is switched on in our encoder when the peer asks for it; a lost packet is concealed
  by libopus's own loss concealment.

G.722 and Opus keep state between frames, so each call opens its own `AudioCodec`
(`open_codec`). A payload that does not decode gives None from `decode`: the session
counts it and conceals the frame, as for a lost packet.

Why these libraries (bench/codec_frame.py has the figures): PyAV ships FFmpeg's G.722
and libopus in its wheel, with no system packages; but its libopus decoder always
gives 48 kHz (so 2:1 resampling per frame after it) and has no loss concealment call,
while libopus itself (Debian's libopus0, four C functions through ctypes) decodes
straight at 24 kHz and conceals a lost frame with `opus_decode(NULL)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import weakref

import numpy as np

from sipbridge.audiostream import Codec
from sipbridge.media.g711 import PCMA, PCMU, G711Codec, Pcm
from sipbridge.media.g711 import compiled as compiled_law
from sipbridge.media.jitterbuffer import conceal

log = logging.getLogger("sipbridge.media")

FRAME_MS = 20
OPUS_RATE = 24000  # what we code Opus at: the model side's rate
OPUS_MAX_PACKET = 1275  # RFC 6716 3.2.1: the largest frame

# Encoding names (lower case) and the SDP rtpmap each is offered and answered with.
KNOWN = {"pcmu": ("PCMU", 8000, 1), "pcma": ("PCMA", 8000, 1),
         "g722": ("G722", 8000, 1), "opus": ("opus", 48000, 2)}


class AudioCodec:
    """One call's codec: its RTP format, its audio rate and its (stateful) coder."""

    name: str
    payload_type: int
    rate: int  # audio samples per second that `encode` takes and `decode` gives
    clock_rate: int  # RTP timestamp units per second

    @property
    def frame_samples(self) -> int:
        """Samples in 20 ms at `rate`."""
        return self.rate * FRAME_MS // 1000

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp units in 20 ms."""
        return self.clock_rate * FRAME_MS // 1000

    def encode(self, pcm: Pcm) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes) -> Pcm | None:
        """The frame's samples, or None when the payload does not decode."""
        raise NotImplementedError

    def conceal(self, last: Pcm | None, run: int) -> Pcm:
        """A stand-in for the `run`-th lost frame in a row: the last one repeated and
        faded (`jitterbuffer.conceal`)."""
        if last is None:
            return np.zeros(self.frame_samples, np.int16)
        return conceal(last, run)


class G711(AudioCodec):
    """G.711, stateless: the module's tables, or with `compiled` the compiled kernels
    (the same octets and samples)."""

    def __init__(self, law: G711Codec, payload_type: int, *, compiled: bool = False) -> None:
        self.name, self.payload_type = law.name, payload_type
        self.rate = self.clock_rate = 8000
        self._law = compiled_law(law) if compiled else law

    def encode(self, pcm: Pcm) -> bytes:
        return self._law.encode(pcm)

    def decode(self, payload: bytes) -> Pcm | None:
        return self._law.decode(payload) if payload else None


class G722(AudioCodec):
    """G.722 at 64 kbit/s through PyAV (FFmpeg's g722 coder): 16 kHz, RTP clock 8000."""

    def __init__(self, payload_type: int = 9) -> None:
        import av

        self.name, self.payload_type = "G722", payload_type
        self.rate, self.clock_rate = 16000, 8000
        self._av = av
        self._enc = av.CodecContext.create("g722", "w")
        self._enc.sample_rate = 16000
        self._enc.layout = "mono"
        self._enc.format = "s16"
        self._enc.open()
        self._dec = av.CodecContext.create("g722", "r")
        self._dec.sample_rate = 16000
        self._dec.layout = "mono"
        self._dec.open()
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        frame = self._av.AudioFrame.from_ndarray(
            pcm.reshape(1, -1).astype(np.int16, copy=False), format="s16", layout="mono")
        frame.sample_rate = 16000
        frame.pts = self._pts
        self._pts += len(pcm)
        return b"".join(bytes(p) for p in self._enc.encode(frame))

    def decode(self, payload: bytes) -> Pcm | None:
        if not payload:
            return None
        try:
            frames = self._dec.decode(self._av.Packet(payload))
        except self._av.error.FFmpegError:
            return None
        if not frames:
            return None
        out: Pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(
            np.int16, copy=False)
        return out


class _LibOpus:
    """The few libopus calls we use (opus/opus.h), bound once."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("opus") or "libopus.so.0"
        lib = ctypes.CDLL(path)
        p, i32, c_int = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int
        lib.opus_encoder_create.restype = p
        lib.opus_encoder_create.argtypes = [i32, c_int, c_int, ctypes.POINTER(c_int)]
        lib.opus_decoder_create.restype = p
        lib.opus_decoder_create.argtypes = [i32, c_int, ctypes.POINTER(c_int)]
        lib.opus_encode.restype = i32
        lib.opus_encode.argtypes = [p, p, c_int, p, i32]
        lib.opus_decode.restype = c_int
        lib.opus_decode.argtypes = [p, p, i32, p, c_int, c_int]
        lib.opus_encoder_ctl.restype = c_int
        lib.opus_encoder_ctl.argtypes = [p, c_int, i32]  # the int-argument setters we use
        lib.opus_encoder_destroy.argtypes = [p]
        lib.opus_decoder_destroy.argtypes = [p]
        self.lib = lib


_OPUS: _LibOpus | None = None
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014


def _libopus() -> _LibOpus:
    global _OPUS
    if _OPUS is None:
        _OPUS = _LibOpus()
    return _OPUS


class Opus(AudioCodec):
    """Opus (RFC 7587) in mono at 24 kHz through libopus; `fec` turns on in-band FEC."""

    def __init__(self, payload_type: int, *, fec: bool = False, bitrate: int = 32000) -> None:
        self.name, self.payload_type = "opus", payload_type
        self.rate, self.clock_rate = OPUS_RATE, 48000
        self.fec = fec
        lib = _libopus().lib
        error = ctypes.c_int(0)
        self._enc = lib.opus_encoder_create(OPUS_RATE, 1, _APPLICATION_VOIP, ctypes.byref(error))
        if not self._enc or error.value:
            raise RuntimeError(f"opus_encoder_create failed ({error.value})")
        self._dec = lib.opus_decoder_create(OPUS_RATE, 1, ctypes.byref(error))
        if not self._dec or error.value:
            lib.opus_encoder_destroy(self._enc)
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        lib.opus_encoder_ctl(self._enc, _SET_BITRATE, bitrate)
        if fec:
            lib.opus_encoder_ctl(self._enc, _SET_INBAND_FEC, 1)
            lib.opus_encoder_ctl(self._enc, _SET_PACKET_LOSS_PERC, 10)
        self._packet = ctypes.create_string_buffer(OPUS_MAX_PACKET)
        self._pcm = np.zeros(OPUS_RATE * 120 // 1000, np.int16)  # the longest Opus packet
        weakref.finalize(self, _opus_free, self._enc, self._dec)

    def encode(self, pcm: Pcm) -> bytes:
        pcm = np.ascontiguousarray(pcm, np.int16)
        n = _libopus().lib.opus_encode(self._enc, pcm.ctypes.data, len(pcm),
                                       self._packet, OPUS_MAX_PACKET)
        if n < 0:
            raise RuntimeError(f"opus_encode failed ({n})")
        return self._packet.raw[:n]

    def decode(self, payload: bytes) -> Pcm | None:
        if not payload:
            return None
        n = _libopus().lib.opus_decode(self._dec, payload, len(payload), self._pcm.ctypes.data,
                                       len(self._pcm), 0)
        if n <= 0:
            return None
        return self._pcm[:n].copy()

    def conceal(self, last: Pcm | None, run: int) -> Pcm:
        """libopus's packet loss concealment (a NULL packet), for 20 ms."""
        n = _libopus().lib.opus_decode(self._dec, None, 0, self._pcm.ctypes.data,
                                       self.frame_samples, 0)
        if n <= 0:
            return super().conceal(last, run)
        return self._pcm[:n].copy()


def _opus_free(enc: int, dec: int) -> None:
    lib = _libopus().lib
    lib.opus_encoder_destroy(enc)
    lib.opus_decoder_destroy(dec)


def fmtp_params(fmtp: str | None) -> dict[str, str]:
    """An fmtp's `name=value; ...` parameters (RFC 7587 7), names lower-cased."""
    params: dict[str, str] = {}
    for item in (fmtp or "").split(";"):
        name, eq, value = item.strip().partition("=")
        if name and eq:
            params[name.strip().lower()] = value.strip()
    return params


def audio_rate(codec: Codec) -> int:
    """The audio rate a negotiated format runs at here (what the recording keeps)."""
    return {"g722": 16000, "opus": OPUS_RATE}.get(codec.name.lower(), 8000)


def open_codec(codec: Codec, *, compiled: bool = False) -> AudioCodec:
    """A new coder for a negotiated payload format; KeyError for one we cannot run.
    `compiled`: G.711 on the compiled kernels (the others are compiled libraries already)."""
    name = codec.name.lower()
    if name == "pcmu":
        return G711(PCMU, codec.payload_type, compiled=compiled)
    if name == "pcma":
        return G711(PCMA, codec.payload_type, compiled=compiled)
    if name == "g722":
        return G722(codec.payload_type)
    if name == "opus":
        fec = fmtp_params(codec.fmtp).get("useinbandfec") == "1"
        return Opus(codec.payload_type, fec=fec)
    known = ", ".join(n for n, _, _ in KNOWN.values())
    raise KeyError(f"no codec named {codec.name!r} (have {known})")


def canonical_name(text: str) -> str:
    """A configured codec name as SDP spells it; ValueError for one we do not know."""
    try:
        return KNOWN[text.lower()][0]
    except KeyError:
        known = ', '.join(n for n, _, _ in KNOWN.values())
        raise ValueError(f"unknown codec {text!r} (known: {known})") from None
