"""What one 20 ms frame costs to encode and decode, per codec and per library.

Run from the project root after ``bash scripts/setup.sh``::

    .venv/bin/python bench/codec_frame.py [--frames 2000]

Each line is one codec through one library: a 440 Hz tone plus noise, cut into 20 ms
frames, each encoded and its packet decoded again (the work one call's media does per
frame each way), with the median over `--frames` frames of the pair in microseconds
and its ratio to G.711 μ-law (our tables) in the same run. PyAV's paths are the
direct ones (AudioFrame.from_ndarray, CodecContext.encode, decode of Packet(bytes)).
PyAV's libopus decoder always gives 48 kHz, so its line includes the 2:1 resampling
to the 24 kHz the model side wants; libopus through ctypes decodes at 24 kHz itself.

G.711, the 1:3 + 3:1 FIR (8 -> 24 -> 8 kHz, what an echoed G.711 frame goes through)
and the two together (an echo's arithmetic: decode, 1:3, 3:1, encode) are timed on the
Python reference and on the compiled kernels (sipbridge.media._kernels), which give
the same output bit for bit.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import av
import numpy as np

from sipbridge.audiostream import Codec
from sipbridge.media.codecs import open_codec
from sipbridge.media.resample import MODEL_RATE, PHONE_RATE, Resampler

Step = Callable[[np.ndarray], object]


def _signal(rate: int, frames: int) -> np.ndarray:
    n = rate * 20 // 1000 * frames
    t = np.arange(n) / rate
    rng = np.random.default_rng(1)
    x = 8000 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 500, n)
    return x.astype(np.int16)


def _time(step: Step, rate: int, frames: int) -> float:
    size = rate * 20 // 1000
    x = _signal(rate, frames)
    costs = []
    for i in range(frames):
        start = time.perf_counter()
        step(x[i * size:(i + 1) * size])
        costs.append(time.perf_counter() - start)
    return float(np.median(costs)) * 1e6


def _ours(codec: Codec, compiled: bool = False) -> tuple[Step, int]:
    coder = open_codec(codec, compiled=compiled)
    return (lambda pcm: coder.decode(coder.encode(pcm))), coder.rate


def _fir(compiled: bool) -> tuple[Step, int]:
    up = Resampler(PHONE_RATE, MODEL_RATE, compiled=compiled)
    down = Resampler(MODEL_RATE, PHONE_RATE, compiled=compiled)
    return (lambda pcm: down.process(up.process(pcm))), PHONE_RATE


def _echo(compiled: bool) -> tuple[Step, int]:
    coder = open_codec(Codec(0, "PCMU", 8000), compiled=compiled)
    up = Resampler(PHONE_RATE, MODEL_RATE, compiled=compiled)
    down = Resampler(MODEL_RATE, PHONE_RATE, compiled=compiled)
    payload = coder.encode(_signal(PHONE_RATE, 1))  # a frame in: its content costs nothing

    def step(pcm: np.ndarray) -> object:
        decoded = coder.decode(payload)
        assert decoded is not None
        return coder.encode(down.process(up.process(decoded)))

    return step, PHONE_RATE


def _pyav_opus() -> tuple[Step, int]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 24000, "mono", "s16", 32000
    enc.options = {"application": "voip", "frame_duration": "20"}
    enc.open()
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout = 48000, "mono"
    dec.open()
    down = Resampler(48000, 24000)
    pts = [0]

    def step(pcm: np.ndarray) -> object:
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 24000, pts[0]
        pts[0] += len(pcm)
        out = []
        for packet in enc.encode(frame):
            for f in dec.decode(av.Packet(bytes(packet))):
                out.append(down.process(f.to_ndarray().reshape(-1)))
        return out

    return step, 24000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args()
    cases: list[tuple[str, tuple[Step, int]]] = [
        ("PCMU  ours (numpy tables)", _ours(Codec(0, "PCMU", 8000))),
        ("PCMU  ours, compiled", _ours(Codec(0, "PCMU", 8000), compiled=True)),
        ("1:3 + 3:1 FIR, Python (numpy int64)", _fir(False)),
        ("1:3 + 3:1 FIR, compiled", _fir(True)),
        ("echo: PCMU, 1:3, 3:1, PCMU, Python", _echo(False)),
        ("echo: PCMU, 1:3, 3:1, PCMU, compiled", _echo(True)),
        ("G722  PyAV (FFmpeg g722)", _ours(Codec(9, "G722", 8000))),
        ("opus  libopus0 via ctypes, 24 kHz", _ours(Codec(111, "opus", 48000, 2))),
        ("opus  libopus0 via ctypes, FEC on", _ours(Codec(111, "opus", 48000, 2,
                                                          "useinbandfec=1"))),
        ("opus  PyAV libopus (+48->24 kHz)", _pyav_opus()),
    ]
    reference = None
    print(f"{'codec / library':38} {'us/frame':>9} {'x PCMU':>8}")
    for name, (step, rate) in cases:
        _time(step, rate, 50)  # warm up
        cost = _time(step, rate, args.frames)
        reference = reference or cost
        print(f"{name:38} {cost:9.1f} {cost / reference:8.1f}")


if __name__ == "__main__":
    main()
