"""G.711 μ-law and A-law (ITU-T G.711; G.191 reference code): values, exhaustive checks."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipbridge.media.g711 import (
    PCMA,
    PCMU,
    G711Codec,
    alaw_decode,
    alaw_encode,
    codec_for,
    ulaw_decode,
    ulaw_encode,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))
Encode = Callable[[npt.NDArray[np.int16]], bytes]
Decode = Callable[[bytes], npt.NDArray[np.int16]]
LAWS = pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)],
    ids=["ulaw", "alaw"]
)


@pytest.fixture(scope="module")
def audioop() -> ModuleType:
    """The stdlib reference (deprecated in 3.11, removed in 3.13: skip where it is gone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module: ModuleType = pytest.importorskip("audioop")
    return module


def codes(data: bytes) -> npt.NDArray[np.int64]:
    return np.frombuffer(data, np.uint8).astype(np.int64)


# G.711 Table 2a (μ-law) and 1a (A-law) on the 16-bit scale: μ-law's first interval is
# 0..3 (14-bit 0), reconstructed as 0; A-law's is 0..15, reconstructed as 8. Negative
# samples mirror about -0.5 (G.191 reads x < 0 as ~x), so -1..-4 is μ-law's "-0".
@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (3, 0xFF, 0xD5),
        (4, 0xFE, 0xD5),
        (15, 0xFD, 0xD5),
        (16, 0xFD, 0xD4),
        (-1, 0x7F, 0x55),
        (-4, 0x7F, 0x55),
        (-5, 0x7E, 0x55),
        (-17, 0x7D, 0x54),
        (1000, 0xCE, 0xFA),
        (-1000, 0x4E, 0x7A),
        (32124, 0x80, 0xAA),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
    ],
)
def test_known_encodings(sample: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([sample], np.int16)
    assert ulaw_encode(pcm) == bytes([ulaw])
    assert alaw_encode(pcm) == bytes([alaw])


# Decoder output values: the midpoint of each interval, on the 16-bit scale.
@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0xFE, 8), (0x7E, -8), (0xF0, 120), (0xEF, 132),
     (0x80, 32124), (0x00, -32124)],
)
def test_known_ulaw_decodings(code: int, value: int) -> None:
    assert ulaw_decode(bytes([code])).tolist() == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xD4, 24), (0xC5, 264), (0xAA, 32256), (0x2A, -32256)],
)
def test_known_alaw_decodings(code: int, value: int) -> None:
    assert alaw_decode(bytes([code])).tolist() == [value]


def test_alaw_matches_audioop_for_every_sample_and_code(audioop: ModuleType) -> None:
    pcm = ALL_SAMPLES.tobytes()
    assert alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(pcm, 2)
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_ulaw_matches_audioop_for_every_sample_and_code(audioop: ModuleType) -> None:
    ours = codes(ulaw_encode(ALL_SAMPLES))
    theirs = codes(audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2))
    negative = ALL_SAMPLES < 0
    assert (ours[~negative] == theirs[~negative]).all()
    # A negative x is encoded as G.191 does: the magnitude of ~x, with the sign bit clear.
    mirrored = codes(audioop.lin2ulaw((~ALL_SAMPLES).tobytes(), 2)) & 0x7F
    assert (ours[negative] == mirrored[negative]).all()
    # audioop floors negative magnitudes instead: where that differs it is one code further
    # from zero (μ-law codes count down as magnitude grows), never more.
    differ = ours != theirs
    assert negative[differ].all()
    assert ((ours - theirs)[differ] == 1).all()
    assert ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def step_of(code: npt.NDArray[np.int64], law: str) -> npt.NDArray[np.int64]:
    """The quantisation step of a code's segment, on the 16-bit scale (G.711 Tables 1a, 2a)."""
    step: npt.NDArray[np.int64]
    if law == "ulaw":
        step = 8 << ((~code >> 4) & 0x07)
    else:
        step = 16 << np.maximum(((code ^ 0x55) >> 4 & 0x07) - 1, 0)
    return step


@LAWS
def test_round_trip_error_is_within_half_a_step(encode: Encode, decode: Decode) -> None:
    law = "ulaw" if encode is ulaw_encode else "alaw"
    encoded = encode(ALL_SAMPLES)
    decoded = decode(encoded).astype(np.int64)
    x = ALL_SAMPLES.astype(np.int64)
    error = np.abs(decoded - x)
    top = int(decode(ALL_CODES).max())  # beyond the largest output value the law saturates
    inside = np.abs(x) <= top + 512
    assert (error[inside] <= step_of(codes(encoded), law)[inside] // 2).all()
    assert (np.abs(decoded[~inside]) == top).all()


@LAWS
def test_output_value_is_the_midpoint_of_its_interval(encode: Encode, decode: Decode) -> None:
    """G.711 Tables 1a and 2a: each decoder output value sits midway between the two
    decision values around it (not halfway to the next output: segments differ in step)."""
    law = codes(encode(ALL_SAMPLES))
    x = ALL_SAMPLES.astype(np.int64)
    assert (np.diff(decode(encode(ALL_SAMPLES)).astype(np.int64)) >= 0).all()  # monotone
    exempt = {0x7F, 0xFF, 0x80, 0x00} if encode is ulaw_encode else set()  # zeros, clipping
    for code in range(256):
        members = x[law == code]
        assert len(members), f"code {code:#04x} is never produced"
        if code not in exempt:
            lo, hi = int(members.min()), int(members.max()) + 1
            assert 2 * int(decode(bytes([code]))[0]) == lo + hi, f"code {code:#04x}"


@LAWS
def test_symmetric_about_minus_half(encode: Encode, decode: Decode) -> None:
    positive = codes(encode(ALL_SAMPLES[ALL_SAMPLES >= 0]))
    mirrored = codes(encode(~ALL_SAMPLES[ALL_SAMPLES >= 0]))
    assert (positive ^ mirrored == 0x80).all()
    assert (decode(ALL_CODES[:128]) == -decode(ALL_CODES[128:])).all()


def test_every_ulaw_code_survives_decode_then_encode() -> None:
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    # 0x7F is μ-law's negative zero: it decodes to 0, which encodes as positive zero.
    expected = bytes(0xFF if c == 0x7F else c for c in ALL_CODES)
    assert again == expected


def test_every_alaw_code_survives_decode_then_encode() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


@LAWS
def test_empty_input(encode: Encode, decode: Decode) -> None:
    assert encode(np.zeros(0, np.int16)) == b""
    assert encode(b"") == b""  # type: ignore[arg-type]
    out = decode(b"")
    assert out.dtype == np.int16 and out.shape == (0,)


@LAWS
def test_bytes_in_are_s16le_and_arrays_of_either_byte_order_agree(
    encode: Encode, decode: Decode
) -> None:
    expected = encode(ALL_SAMPLES)
    assert encode(ALL_SAMPLES.astype("<i2").tobytes()) == expected  # type: ignore[arg-type]
    assert encode(bytearray(ALL_SAMPLES.astype("<i2").tobytes())) == expected  # type: ignore[arg-type]
    assert encode(ALL_SAMPLES.astype(">i2")) == expected
    assert encode(ALL_SAMPLES[::3]) == expected[::3]  # strided views need no copy by the caller


@LAWS
def test_decoded_frame_is_a_fresh_writable_int16_array(encode: Encode, decode: Decode) -> None:
    t = np.arange(160) / 8000
    frame = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = decode(encode(frame))
    assert out.dtype == np.int16 and out.shape == (160,) and out.flags.writeable
    first = int(out[0])
    out[0] = first + 1  # the array is the caller's, not a view of the decode table
    assert int(decode(encode(frame))[0]) == first


@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        (b"\x00\x01\x02", ValueError, "even number of bytes"),
        (np.zeros(160, np.float64), TypeError, "int16"),
        (np.zeros(160, np.int32), TypeError, "int16"),
        (np.zeros(160, np.uint16), TypeError, "int16"),
        (np.zeros((2, 80), np.int16), ValueError, "1-D"),
        ([0, 1, 2], TypeError, "list"),
        ("abcd", TypeError, "str"),
    ],
)
@LAWS
def test_rejects_what_is_not_int16_pcm(
    encode: Encode, decode: Decode, bad: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        encode(bad)  # type: ignore[arg-type]


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_frames_encode_sample_by_sample(samples: list[int]) -> None:
    pcm = np.array(samples, np.int16)
    for encode in (ulaw_encode, alaw_encode):
        whole = encode(pcm)
        assert whole == b"".join(encode(pcm[i : i + 1]) for i in range(len(pcm)))


@given(st.binary(max_size=400))
def test_any_octets_decode_one_sample_each(data: bytes) -> None:
    for decode, encode in ((ulaw_decode, ulaw_encode), (alaw_decode, alaw_encode)):
        out = decode(data)
        assert out.shape == (len(data),)
        assert decode(encode(out)).tolist() == out.tolist()


@pytest.mark.parametrize(
    ("name", "codec", "pt"),
    [("PCMU", PCMU, 0), ("pcmu", PCMU, 0), ("PCMA", PCMA, 8), ("pcma", PCMA, 8)],
)
def test_codec_for(name: str, codec: G711Codec, pt: int) -> None:
    found = codec_for(name)
    assert found is codec and found.payload_type == pt and found.clock_rate == 8000
    assert found.name == name.upper()


@pytest.mark.parametrize("name", ["G722", "telephone-event", "opus", ""])
def test_codec_for_rejects_other_codecs(name: str) -> None:
    with pytest.raises(KeyError, match="PCMU, PCMA"):
        codec_for(name)


def test_codec_is_frozen_and_uses_its_law() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PCMU.payload_type = 8  # type: ignore[misc]
    silence = np.zeros(160, np.int16)
    assert PCMU.encode(silence) == b"\xff" * 160
    assert PCMA.encode(silence) == b"\xd5" * 160
    assert PCMU.decode(b"\xff" * 160).tolist() == [0] * 160
