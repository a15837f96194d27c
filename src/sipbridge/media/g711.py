"""G.711 μ-law (PCMU) and A-law (PCMA): ITU-T G.711 companding, by table lookup.

Each law is two numpy tables built once at import: a 65536-entry uint8 encode table
indexed by the int16 sample viewed as uint16, and a 256-entry int16 decode table.
Encoding or decoding a 20 ms frame is then one `take`, a couple of microseconds.

The tables follow the ITU-T reference implementation of G.711 (G.191 Software Tool
Library, `g711.c`), which reads a negative 16-bit sample x by its one's complement
`~x`. That makes both quantisers exactly symmetric about -0.5 and each code's
reconstruction value the midpoint of its interval, so the error is at most half a
step. Python's `audioop` agrees for A-law, and for μ-law on non-negative input; for
negative μ-law input it takes the magnitude as `-(x >> 2)` (floor, not one's
complement), so e.g. -1 becomes 0x7E rather than 0x7F and negative samples carry up
to a full step of error. Decoders of either agree on every code.

Payload types are the static assignments of RFC 3551 6 (PCMU 0, PCMA 8, 8000 Hz);
the octet order on the wire is the sample order (RFC 3551 4.5.14).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from sipbridge.media import speed

Pcm: TypeAlias = npt.NDArray[np.int16]
PcmInput: TypeAlias = Pcm | bytes | bytearray | memoryview

_INT16 = np.dtype(np.int16)
_S16LE = np.dtype("<u2")  # raw PCM arrives as 16-bit little-endian (s16le)


def _bit_length(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """int.bit_length for each non-negative element (frexp's exponent is exactly that)."""
    return np.frexp(values.astype(np.float64))[1].astype(np.int64)


def _all_samples() -> npt.NDArray[np.int64]:
    """Every int16 value, in the order of its uint16 view: index i holds int16(i)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.711 3.2 and Table 2a (μ-law), as in G.191 `ulaw_compress`."""
    x = _all_samples()
    # 14-bit magnitude plus the bias of 33 that makes each segment boundary a power of two
    biased = np.minimum(np.where(x < 0, ~x, x) >> 2, 0x1FFF - 33) + 33
    exponent = _bit_length(biased >> 6)  # segment 0..7
    mantissa = (biased >> (exponent + 1)) & 0x0F
    code = ~((exponent << 4) | mantissa) & 0x7F  # μ-law transmits every bit inverted
    signed: npt.NDArray[np.int64] = code | np.where(x >= 0, 0x80, 0)
    return signed.astype(np.uint8)


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    """G.711 Table 2a decoder output values, on the 16-bit scale (G.191 `ulaw_expand`)."""
    code = np.arange(256, dtype=np.int64)
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 8 << exponent
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    value: npt.NDArray[np.int64] = np.where(code & 0x80, magnitude, -magnitude)
    return value.astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.711 3.1 and Table 1a (A-law), as in G.191 `alaw_compress`."""
    x = _all_samples()
    magnitude = np.where(x < 0, ~x, x) >> 4  # 0..2047, in steps of the first segment
    exponent = np.maximum(_bit_length(magnitude) - 4, 0)  # segments 0 and 1 share a step
    mantissa = np.where(exponent == 0, magnitude, magnitude >> np.maximum(exponent - 1, 0))
    code = (exponent << 4) | (mantissa & 0x0F)
    # A-law inverts the even bits (0x55) for transmission; the sign bit is 1 for x >= 0.
    signed: npt.NDArray[np.int64] = code | np.where(x >= 0, 0x80, 0)
    return (signed ^ 0x55).astype(np.uint8)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    """G.711 Table 1a decoder output values, on the 16-bit scale (G.191 `alaw_expand`)."""
    code = np.arange(256, dtype=np.int64)
    plain = (code ^ 0x55) & 0x7F
    exponent = plain >> 4
    mantissa = (plain & 0x0F) + np.where(exponent > 0, 16, 0)  # the implied leading 1
    magnitude = ((mantissa << 4) + 8) << np.maximum(exponent - 1, 0)
    value: npt.NDArray[np.int64] = np.where(code & 0x80, magnitude, -magnitude)
    return value.astype(np.int16)


_ULAW_ENC = _ulaw_encode_table()
_ULAW_DEC = _ulaw_decode_table()
_ALAW_ENC = _alaw_encode_table()
_ALAW_DEC = _alaw_decode_table()
for _table in (_ULAW_ENC, _ULAW_DEC, _ALAW_ENC, _ALAW_DEC):
    _table.flags.writeable = False


def _as_indices(samples: PcmInput) -> npt.NDArray[np.uint16]:
    """The samples as uint16 table indices; raises for anything that is not int16 PCM."""
    if isinstance(samples, np.ndarray):
        if samples.dtype is not _INT16:  # identity first: the hot path costs no comparison
            if samples.dtype.kind != "i" or samples.dtype.itemsize != 2:
                raise TypeError(f"G.711 encodes int16 samples, not {samples.dtype} samples")
            samples = samples.astype(_INT16)  # int16 in the other byte order
        if samples.ndim != 1:
            raise ValueError(f"G.711 encodes a 1-D array of samples, not shape {samples.shape}")
        return samples.view(np.uint16)
    if isinstance(samples, bytes | bytearray | memoryview):
        if len(samples) % 2:
            raise ValueError(f"16-bit PCM has an even number of bytes, not {len(samples)}")
        return np.frombuffer(samples, _S16LE)
    raise TypeError(f"G.711 encodes an int16 array or s16le bytes, not {type(samples).__name__}")


def ulaw_encode(samples: PcmInput) -> bytes:
    """μ-law encode (G.711 3.2): int16 samples (or s16le bytes) to one octet per sample."""
    return _ULAW_ENC.take(_as_indices(samples)).tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """μ-law decode (G.711 3.2): one int16 sample per octet, in a new writable array."""
    return _ULAW_DEC.take(np.frombuffer(data, np.uint8))


def alaw_encode(samples: PcmInput) -> bytes:
    """A-law encode (G.711 3.1): int16 samples (or s16le bytes) to one octet per sample."""
    return _ALAW_ENC.take(_as_indices(samples)).tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> Pcm:
    """A-law decode (G.711 3.1): one int16 sample per octet, in a new writable array."""
    return _ALAW_DEC.take(np.frombuffer(data, np.uint8))


@dataclass(frozen=True, slots=True)
class G711Codec:
    """One G.711 law as an RTP payload format (RFC 3551 4.5.14, 6)."""

    name: str
    payload_type: int
    encode: Callable[[PcmInput], bytes]
    decode: Callable[[bytes | bytearray | memoryview], Pcm]
    clock_rate: int = 8000


PCMU = G711Codec("PCMU", 0, ulaw_encode, ulaw_decode)
PCMA = G711Codec("PCMA", 8, alaw_encode, alaw_decode)
_CODECS = {codec.name: codec for codec in (PCMU, PCMA)}


_COMPILED: dict[str, G711Codec] = {}


def compiled(law: G711Codec) -> G711Codec:
    """The same law on the compiled kernels (sipbridge.media._kernels), which give the
    same octets and samples bit for bit; MediaPathError when they are not built."""
    found = _COMPILED.get(law.name)
    if found is None:
        kernels = speed.require("kernels")
        prefix = {"PCMU": "ulaw", "PCMA": "alaw"}[law.name]
        to_octets = getattr(kernels, f"{prefix}_encode")
        to_samples = getattr(kernels, f"{prefix}_decode")

        def encode(samples: PcmInput) -> bytes:
            if isinstance(samples, np.ndarray) and not samples.flags.c_contiguous:
                samples = np.ascontiguousarray(samples)  # the kernels read a buffer straight
            octets: bytes = to_octets(samples)
            return octets

        def decode(data: bytes | bytearray | memoryview) -> Pcm:
            pcm: Pcm = np.frombuffer(to_samples(data), np.int16)  # a new, writable array
            return pcm

        found = _COMPILED[law.name] = G711Codec(law.name, law.payload_type, encode, decode)
    return found


def codec_for(name: str) -> G711Codec:
    """The codec for an SDP encoding name; names are case-insensitive (RFC 4855 3).

    Raises KeyError for anything but PCMU and PCMA."""
    try:
        return _CODECS[name.upper()]
    except KeyError:
        raise KeyError(f"no G.711 codec named {name!r} (have PCMU, PCMA)") from None
