"""The other media modes end to end: a WAV played to a real caller, and the media
timeout hanging up on a caller that sends no RTP."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.integration.gateway import Gateway
from tests.integration.peers import PHONE_RATE, Baresip, make_speech_wav, xcorr_delay
from tests.integration.sipp import SippResult

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("baresip") is None or shutil.which("espeak-ng") is None,
                    reason="baresip and espeak-ng are installed by scripts/setup.sh")
def test_play_mode_plays_the_wav_to_the_caller(
    start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.wav"
    speech = make_speech_wav(prompt, "Thank you for calling. Please hold.")
    gw = start_gateway(auto_answer=f"play:{prompt}")
    with Baresip(tmp_path / "baresip") as phone:
        call = phone.call(f"sip:prompt@127.0.0.1:{gw.port}",
                          np.zeros(PHONE_RATE, np.int16), seconds=len(speech) / PHONE_RATE + 1)
    assert call.established
    peak, delay = xcorr_delay(speech, call.received, PHONE_RATE)
    assert peak > 0.9, f"correlation {peak:.3f} at {delay * 1000:.0f} ms"
    assert 0 <= delay < 0.5  # it starts with the answer


def test_media_timeout_hangs_up_a_silent_caller(
    start_gateway: Callable[..., Gateway], sipp: Callable[..., SippResult]
) -> None:
    gw = start_gateway(auto_answer="silence", media_timeout=1.0)
    started = time.monotonic()
    result = sipp(gw, "uac_wait_bye.xml", calls=1, timeout=15)
    elapsed = time.monotonic() - started
    assert result.ok, result.describe()
    assert 1.0 <= elapsed < 8.0
    log = gw.log()
    assert re.search(r"call rtc_\w+: no RTP for 1 s, hanging up", log), log
    assert re.search(r"call rtc_\w+ ended \(media_timeout\)", log), log
