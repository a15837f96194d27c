"""The media path end to end: baresip calls an echo, speaks, and hears itself.

baresip (headless, see peers.py) dials ``sip:echo@...``, sends about 3 s of
espeak-ng speech as PCMU and records what comes back. The recording must be
the speech (normalised cross-correlation above ``MIN_CORRELATION``), late by
less than ``MAX_ECHO_DELAY``, and as much of it must be voice as in what was
sent.

The echo is sipbridge with ``auto_answer = "echo"`` (decode, 8 -> 24 -> 8 kHz,
encode, paced 20 ms packets), and, as a check of the harness itself, SIPp's
own UAS with ``-rtp_echo``, which sends every packet back untouched.

Why these thresholds (see ``test_thresholds_tell_an_echo_from_anything_else``,
which measures them on the same speech without any process):

- the speech against its own G.711 round trip, with or without an 8 -> 24 ->
  8 kHz resampling in between, correlates at 0.999 or more; against SIPp's
  echo through baresip it is 0.9999;
- an unrelated sentence correlates below 0.2, white noise below 0.05;
- 0.9 still passes the speech with noise 10 dB below it (0.95) but fails it
  with 30 % of its 20 ms frames lost (0.88): on loopback no frame is lost.

``MAX_ECHO_DELAY`` is 150 ms: ITU-T G.114's whole one-way budget for
interactive speech. The echo crosses the gateway's inbound path (jitter
buffer, decode, upsample) and its outbound path (downsample, pacing, encode)
once each, which must be a small part of that budget.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import soxr

from tests.integration.peers import (
    PHONE_RATE,
    Baresip,
    SippUas,
    active_fraction,
    frame_levels_dbfs,
    make_speech_wav,
    to_int16,
    xcorr_delay,
)

if TYPE_CHECKING:
    from tests.integration.gateway import Gateway

pytestmark = pytest.mark.integration

needs_speech = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (scripts/setup.sh does)"
)
needs_baresip = pytest.mark.skipif(
    shutil.which("baresip") is None, reason="baresip is not installed (scripts/setup.sh does)"
)

SPEECH = "Please hold while I connect you to the sales team."  # ~3.2 s
OTHER_SPEECH = "The weather tomorrow will be cold and windy, with rain in the evening."
CALL_SECONDS = 4.5  # the speech, then time for the last of the echo to come back
MIN_CORRELATION = 0.9
MAX_ECHO_DELAY = 0.150  # seconds
ACTIVE_TOLERANCE = 0.10  # voiced time heard vs sent, relative


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The espeak-ng sentence as an 8 kHz WAV, and its samples."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh does)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    return path, make_speech_wav(path, SPEECH)


@pytest.fixture(params=["sipbridge", "sipp-rtp-echo"])
def echo_uri(
    request: pytest.FixtureRequest,
    start_gateway: Callable[..., Gateway],
    tmp_path: Path,
) -> Iterator[str]:
    """Where to call an echo: sipbridge in echo mode, or SIPp's UAS with -rtp_echo."""
    if request.param == "sipbridge":
        gw = start_gateway(auto_answer="echo")
        yield f"sip:echo@{gw.address}"
        return
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not installed (scripts/setup.sh does)")
    with SippUas(tmp_path / "sipp-uas", rtp_echo=True) as uas:
        yield f"sip:echo@{uas.address}"


def voiced_seconds(samples: np.ndarray, rate: int) -> float:
    """Time spent in 20 ms frames louder than active_fraction's threshold."""
    return active_fraction(samples, rate) * len(frame_levels_dbfs(samples, rate)) * 0.020


@needs_baresip
@needs_speech
def test_echo_returns_the_callers_speech(
    echo_uri: str, speech: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    wav, sent = speech
    with Baresip(tmp_path / "baresip") as ua:
        call = ua.call(echo_uri, wav, CALL_SECONDS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}"
    assert call.established, context
    assert call.rate == PHONE_RATE
    # baresip sent the file as it is: the sender side of the harness works.
    assert xcorr_delay(sent, call.sent, call.rate)[0] > 0.999, context
    assert call.received.size > 0.8 * sent.size, f"heard {call.received.size} samples\n{context}"

    peak, delay = xcorr_delay(sent, call.received, call.rate)
    assert peak > MIN_CORRELATION, f"correlation {peak:.4f} at {delay * 1000:.1f} ms\n{context}"
    assert 0.0 <= delay < MAX_ECHO_DELAY, f"echo {delay * 1000:.1f} ms late\n{context}"

    heard, spoken = voiced_seconds(call.received, call.rate), voiced_seconds(sent, PHONE_RATE)
    assert abs(heard - spoken) <= ACTIVE_TOLERANCE * spoken, (
        f"voiced {heard:.2f} s heard, {spoken:.2f} s sent "
        f"({active_fraction(call.received, call.rate):.0%} of the recording)\n{context}"
    )


@needs_speech
def test_thresholds_tell_an_echo_from_anything_else(
    speech: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """The figures behind MIN_CORRELATION, measured on the test's own speech."""
    g711 = pytest.importorskip("sipbridge.media.g711")
    _, sent = speech

    def round_trip(x: np.ndarray) -> np.ndarray:
        decoded: np.ndarray = g711.ulaw_decode(g711.ulaw_encode(x))
        return decoded

    def resampled(x: np.ndarray) -> np.ndarray:
        """8 -> 24 -> 8 kHz in 20 ms chunks, as a streaming echo does it."""
        up = soxr.ResampleStream(PHONE_RATE, 24000, 1, dtype="int16", quality="MQ")
        down = soxr.ResampleStream(24000, PHONE_RATE, 1, dtype="int16", quality="MQ")
        chunks = [down.resample_chunk(up.resample_chunk(x[i : i + 160]))
                  for i in range(0, x.size, 160)]  # fmt: skip
        return np.concatenate(chunks)

    rng = np.random.default_rng(4733)
    other = make_speech_wav(tmp_path / "other.wav", OTHER_SPEECH)
    noise = to_int16(rng.normal(0.0, 3000.0, sent.size))
    power = float(np.mean(sent.astype(np.float64) ** 2))
    noisy = to_int16(sent + rng.normal(0.0, np.sqrt(power / 10), sent.size))  # 10 dB SNR
    frames = sent[: sent.size // 160 * 160].reshape(-1, 160).copy()
    frames[rng.random(len(frames)) < 0.3] = 0  # 30 % of the frames lost

    def peak(x: np.ndarray) -> float:
        return xcorr_delay(sent, x, PHONE_RATE)[0]

    assert peak(round_trip(sent)) > 0.999
    assert peak(round_trip(resampled(round_trip(sent)))) > 0.999
    assert xcorr_delay(sent, round_trip(resampled(round_trip(sent))), PHONE_RATE)[1] == 0.0
    assert abs(peak(other)) < 0.2
    assert abs(peak(noise)) < 0.05
    assert MIN_CORRELATION < peak(noisy) < 0.97
    assert peak(frames.reshape(-1)) < MIN_CORRELATION
