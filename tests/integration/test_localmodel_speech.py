"""The local model speaks a reply clause by clause: the first clause's audio goes out while
the rest is still being synthesised, and a cancel stops it between clauses."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import numpy as np
import pytest

from sipbridge.localmodel import tts
from tests.integration.test_localmodel import GREETING, arun, connect, local_model

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not tts.available(), reason="espeak-ng is not installed")]


class Recorder:
    """espeak-ng that takes `later` seconds longer for every clause but the first, and notes
    when each clause was asked for and done."""

    def __init__(self, later: float) -> None:
        self.later = later
        self.calls: list[tuple[str, float, float]] = []
        self.asked = 0
        self._lock = threading.Lock()

    def __call__(self, text: str, voice: str | None, speed: float) -> np.ndarray:
        started = time.monotonic()
        with self._lock:
            self.asked += 1
            first = self.asked == 1
        if not first:
            time.sleep(self.later)
        pcm = tts.synthesize(text, voice, speed=speed)
        with self._lock:
            self.calls.append((text, started, time.monotonic()))
        return pcm


def _audio(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events
                    if e["type"] == "response.output_audio.delta")


def test_first_clause_is_heard_before_the_rest_is_synthesised() -> None:
    recorder = Recorder(later=0.6)

    async def main() -> None:
        async with local_model(synthesizer=recorder) as server, connect(server) as client:
            await client.send({"type": "response.create"})
            first_audio = None
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] != "response.done":
                events.append(await client.recv())
                if events[-1]["type"] == "response.output_audio.delta" and first_audio is None:
                    first_audio = time.monotonic()
            assert first_audio is not None
            texts = [text for text, _, _ in recorder.calls]
            assert texts == ["Hello,", "thanks for calling.", "How can I help you?"]
            second_done = recorder.calls[1][2]
            assert first_audio < second_done - 0.3, (first_audio, second_done)
            deltas = "".join(e["delta"] for e in events
                             if e["type"] == "response.output_audio_transcript.delta")
            assert deltas == GREETING
            done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
            assert done["transcript"] == GREETING
            # The clauses' sound, trimmed, with a pause after each but the last.
            audio = np.frombuffer(_audio(events), "<i2")
            sound = sum(len(tts.trim(tts.synthesize(t))) for t in texts)
            gaps = tts.gap_after(texts[0]) + tts.gap_after(texts[1])
            assert len(audio) == sound + gaps
            assert np.array_equal(audio, tts.spoken(GREETING))

    arun(main)


def test_cancel_between_clauses_stops_the_reply_where_it_was() -> None:
    recorder = Recorder(later=0.8)

    async def main() -> None:
        async with local_model(synthesizer=recorder) as server, connect(server) as client:
            await client.send({"type": "response.create"})
            events = await client.until("response.output_audio.delta")
            response_id = events[0]["response"]["id"]
            await client.send({"type": "response.cancel", "response_id": response_id})
            events += await client.until("response.done")
            done = events[-1]["response"]
            assert done["status"] == "cancelled"
            transcript = next(e for e in events
                              if e["type"] == "response.output_audio_transcript.done")
            assert transcript["transcript"] == "Hello,"
            assert done["output"][0]["status"] == "incomplete"
            # The clause after the next was never asked for.
            await client.send({"type": "session.update", "session": {"type": "realtime"}})
            await client.until("session.updated")
            assert [t for t, _, _ in recorder.calls] == ["Hello,", "thanks for calling."]
            assert recorder.asked == 2

    arun(main)


def test_g711_output_comes_in_whole_chunks_across_clauses() -> None:
    async def main() -> None:
        async with local_model(synthesizer=Recorder(later=0.0), chunk_ms=100) as server, \
                connect(server) as client:
            pcmu = {"type": "audio/pcmu"}
            await client.send({"type": "session.update", "session": {
                "type": "realtime", "audio": {"output": {"format": pcmu}}}})
            await client.until("session.updated")
            await client.send({"type": "response.create"})
            events = await client.until("response.done")
            chunks = [base64.b64decode(e["delta"]) for e in events
                      if e["type"] == "response.output_audio.delta"]
            assert len(chunks) > 10
            assert all(len(c) == 800 for c in chunks[:-1])  # 100 ms of 8 kHz μ-law
            assert 0 < len(chunks[-1]) <= 800

    arun(main)
