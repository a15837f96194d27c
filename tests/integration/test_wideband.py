"""Wideband calls end to end: baresip calls the echo with only G.722, or only Opus.

baresip offers one codec (its account's ``audio_codecs``), sends espeak-ng speech and
records what it sent and heard at the codec's rate (16 kHz for G.722, 48 kHz for
Opus). The gateway answers with that codec, echoes through its 24 kHz path, and
records the call at the call's own rate (16 kHz for G.722, 24 kHz for Opus). Both what
baresip heard and the gateway's recording of the caller must be the speech baresip
sent: normalised cross-correlation above 0.9, as in test_media_echo.py.
"""

from __future__ import annotations

import shutil
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from sipbridge.media.resample import resample
from tests.integration.peers import PHONE_RATE, Baresip, make_speech_wav, xcorr_delay
from tests.integration.test_media_echo import voiced_seconds

if TYPE_CHECKING:
    from tests.integration.gateway import Gateway

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("baresip") is None,
                       reason="baresip is not installed (scripts/setup.sh does)"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None,
                       reason="espeak-ng is not installed (scripts/setup.sh does)"),
]

SPEECH = "Please hold while I connect you to the sales team."
CALL_SECONDS = 4.5
MIN_CORRELATION = 0.9
MAX_ECHO_DELAY = 0.150
GREETING_SECONDS = 8.0  # the local model's start and its greeting


def _recording(directory: Path) -> tuple[np.ndarray, int]:
    """The gateway's one recording: its left channel (the caller) and its rate."""
    [path] = directory.glob("*.wav")
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        stereo = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    return stereo[:, 0].copy(), rate


@pytest.mark.parametrize(("codec", "call_rate"), [("G722", 16000), ("opus", 24000)])
def test_echo_over_a_wideband_codec(
    codec: str, call_rate: int,
    start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    wav = tmp_path / "speech.wav"
    make_speech_wav(wav, SPEECH)
    recordings = tmp_path / "recordings"
    gw = start_gateway(auto_answer="echo", recordings=str(recordings))
    with Baresip(tmp_path / "baresip", codec=codec) as ua:
        call = ua.call(f"sip:echo@{gw.address}", wav, CALL_SECONDS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}"
    assert call.established, context
    assert f"set audio encoder: {codec.lower()} " in log.lower(), context  # it ran that codec
    sent = call.sent  # what baresip encoded, at its codec's rate
    assert call.received.size > 0.8 * sent.size, context

    peak, delay = xcorr_delay(sent, call.received, call.rate)
    assert peak > MIN_CORRELATION, f"heard: {peak:.4f} at {delay * 1000:.1f} ms\n{context}"
    assert 0.0 <= delay < MAX_ECHO_DELAY, f"echo {delay * 1000:.1f} ms late\n{context}"

    caller, rate = _recording(recordings)
    assert rate == call_rate  # the recording keeps the call's rate
    peak, delay = xcorr_delay(resample(sent, call.rate, rate), caller, rate)
    assert peak > MIN_CORRELATION, f"recorded: {peak:.4f} at {delay * 1000:.1f} ms\n{context}"


@pytest.mark.parametrize(("codec", "call_rate"), [("G722", 16000), ("opus", 24000)])
def test_the_built_in_agent_greets_a_wideband_caller(
    codec: str, call_rate: int, start_gateway: Callable[..., Gateway], tmp_path: Path,
) -> None:
    pytest.importorskip("sipbridge.localmodel.server")
    recordings = tmp_path / "recordings"
    gw = start_gateway(auto_answer="agent", recordings=str(recordings))
    with Baresip(tmp_path / "baresip", codec=codec) as ua:
        call = ua.call(f"sip:agent@{gw.address}", np.zeros(PHONE_RATE, np.int16), GREETING_SECONDS)
        log = ua.log()
    context = f"{call}\n--- baresip ---\n{log[-3000:]}"
    assert call.established, context
    assert f"set audio decoder: {codec.lower()} " in log.lower(), context
    heard = voiced_seconds(call.received, call.rate)
    assert heard > 0.8, f"baresip heard {heard:.2f} s of voice\n{context}"
    _, rate = _recording(recordings)
    assert rate == call_rate
