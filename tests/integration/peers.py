"""Media peers for integration tests, and the measures that judge what they hear.

Everything runs on 127.0.0.1.

- From ``sipbridge.demo`` (the demo drives the same phones): ``make_speech_wav``,
  ``read_wav`` / ``write_wav``, ``xcorr_delay``, and ``Baresip``, baresip 1.0 run
  headless and driven over its ``ctrl_tcp`` socket.
- ``active_fraction(samples, rate)``: the share of 20 ms frames that are not silent.
- ``SippUas``: SIPp as the called party in the background (the built-in
  ``uas`` with ``-rtp_echo``, or a scenario file).
- ``RtpSink`` and ``telephone_events``: a UDP port that keeps every RTP packet
  it receives, and the RFC 4733 events in them.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt
import pytest

from sipbridge.demo.audio import (
    PHONE_RATE,
    Pcm,
    make_speech_wav,
    read_wav,
    to_int16,
    write_wav,
    xcorr_delay,
)
from sipbridge.demo.baresip import Baresip, BaresipCall, BaresipError, Peer, terminate
from tests.integration.probe import LOOPBACK
from tests.integration.sipp import sipp_command

__all__ = [
    "PHONE_RATE", "Baresip", "BaresipCall", "BaresipError", "Pcm", "RtpPacket", "RtpSink",
    "SippUas", "TelephoneEvent", "active_fraction", "echo_missing", "find_whole",
    "frame_levels_dbfs", "make_speech_wav", "pieces_found", "read_wav", "telephone_events",
    "to_int16", "write_wav", "xcorr_delay",
]

SPEECH_TEXT = (
    "Thank you for calling. Please say the name of the person you want to reach, "
    "or press one for sales."
)
DTMF_DIGITS = "0123456789*#ABCD"  # RFC 4733 3.2: event codes 0 to 15, in this order
FRAME_MS = 20


def frame_levels_dbfs(samples: npt.ArrayLike, rate: int, frame_ms: int = FRAME_MS) -> np.ndarray:
    """RMS level of each whole ``frame_ms`` frame, in dB relative to int16 full scale."""
    x = np.asarray(samples, dtype=np.float64)
    n = rate * frame_ms // 1000
    frames = x[: x.size // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames**2, axis=1)) if frames.size else np.zeros(0)
    levels: np.ndarray = 20 * np.log10(np.maximum(rms, 1e-9) / 32768)
    return levels


def active_fraction(samples: npt.ArrayLike, rate: int, *, threshold_dbfs: float = -45.0) -> float:
    """The share of 20 ms frames louder than ``threshold_dbfs`` (0 for no frames).

    -45 dBFS sits well above G.711's idle-channel noise (μ-law's smallest step
    is -78 dBFS) and well below the quiet syllables of speech at -6 dBFS peak."""
    levels = frame_levels_dbfs(samples, rate)
    return float(np.mean(levels > threshold_dbfs)) if levels.size else 0.0


# --- SIPp as the called party --------------------------------------------------


# Tests with real phones and speech: skipped where baresip or espeak-ng is missing.
needs_phones = pytest.mark.skipif(
    shutil.which("baresip") is None or shutil.which("espeak-ng") is None,
    reason="baresip and espeak-ng are needed (scripts/setup.sh installs them)")


class SippUas(Peer):
    """SIPp answering calls in the background until it has handled ``calls``.

    ``SippUas(workdir)`` is the built-in ``uas`` with ``-rtp_echo`` (every RTP
    packet sent back to its source); ``SippUas(workdir, "uas_sink.xml",
    keys={"sink_port": "4000"})`` runs a scenario from ``scenarios/`` with
    ``-key`` values. :attr:`address` is where to call it."""

    READY_TIMEOUT = 5.0

    def __init__(
        self,
        workdir: Path,
        scenario: str | Path = "uas",
        *,
        rtp_echo: bool = True,
        keys: Mapping[str, str] | None = None,
        calls: int = 1,
        timeout: float = 60.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        more = ["-mi", LOOPBACK, *(["-rtp_echo"] if rtp_echo else [])]
        for key, value in (keys or {}).items():
            more += ["-key", key, value]
        workdir.mkdir(parents=True, exist_ok=True)
        self.command = sipp_command(
            LOOPBACK, scenario, workdir, calls=calls, timeout=timeout,
            recv_timeout=timeout, extra=[*more, *extra],
        )  # fmt: skip
        self.port = int(self.command[self.command.index("-p") + 1])
        self.media_port = int(self.command[self.command.index("-mp") + 1])
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> Self:
        if shutil.which("sipp") is None:
            raise FileNotFoundError("sipp is not installed (Debian package sip-tester)")
        with (self.workdir / "output.txt").open("wb") as out:
            self.process = subprocess.Popen(
                self.command, cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.READY_TIMEOUT
        while not _udp_port_taken(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sipp did not bind udp {self.port}\n{self.output()}")
            time.sleep(0.02)
        return self

    def wait(self, timeout: float) -> int | None:
        """Wait for SIPp to finish its calls; its exit code, or None if still running."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """SIGTERM (SIPp then exits with its statistics), SIGKILL if needed."""
        if self.process is None:
            return None
        return terminate(self.process, 3.0)

    def output(self) -> str:
        """SIPp's screen output and error log."""
        parts = []
        for name in ("output.txt", "errors.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


def _udp_port_taken(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# --- RTP and RFC 4733 -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """The fields of an RTP packet (RFC 3550 5.1) that these tests read."""

    arrival: float
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes

    @classmethod
    def parse(cls, data: bytes, arrival: float) -> RtpPacket | None:
        """None for anything that is not RTP version 2."""
        if len(data) < 12 or data[0] >> 6 != 2:
            return None
        first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension (RFC 3550 5.3.1)
            if len(data) < offset + 4:
                return None
            offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
        end = len(data)
        if first & 0x20 and end > offset:  # padding: the last octet counts it
            end -= data[-1]
        if end < offset:
            return None
        return cls(arrival, second & 0x7F, bool(second & 0x80), seq, ts, ssrc, data[offset:end])


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 event as a receiver reconstructs it from its packets."""

    digit: str
    duration_ms: float  # the largest duration field (RFC 4733 2.5.1.3), in ms
    ended: bool  # an end-bit packet arrived (2.5.1.4)
    packets: int
    span_ms: float  # first to last packet arrival

    @property
    def duration_samples(self) -> int:
        return round(self.duration_ms * PHONE_RATE / 1000)


def telephone_events(
    packets: Iterable[RtpPacket], payload_type: int, clock_rate: int = PHONE_RATE
) -> list[TelephoneEvent]:
    """The RFC 4733 events among ``packets`` (2.5: one event per RTP timestamp
    and SSRC, its end packets possibly repeated), in the order they began."""
    by_start: dict[tuple[int, int], list[RtpPacket]] = {}
    for p in packets:
        if p.payload_type == payload_type and len(p.payload) >= 4:
            by_start.setdefault((p.ssrc, p.timestamp), []).append(p)
    events = []
    for group in by_start.values():
        code = group[0].payload[0]
        durations = [struct.unpack_from("!H", p.payload, 2)[0] for p in group]
        events.append(
            TelephoneEvent(
                digit=DTMF_DIGITS[code] if code < len(DTMF_DIGITS) else f"event{code}",
                duration_ms=max(durations) * 1000 / clock_rate,
                ended=any(p.payload[1] & 0x80 for p in group),
                packets=len(group),
                span_ms=(group[-1].arrival - group[0].arrival) * 1000,
            )
        )
    return events


class RtpSink:
    """A UDP port on 127.0.0.1 that keeps every RTP packet it receives."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[RtpPacket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-sink", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            packet = RtpPacket.parse(data, time.monotonic())
            if packet is not None:
                self.packets.append(packet)


def pieces_found(sent: np.ndarray, heard: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """Each voiced quarter second of `sent` found in `heard`: (correlation, delay s).
    Piece by piece, a phone's jitter buffer dropping 10-20 ms somewhere (as linphone's and
    baresip's do when packets come in a burst) costs one piece, not the whole match."""
    size = rate // 4
    pieces = []
    for start in range(0, sent.size - size + 1, size):
        piece = sent[start:start + size]
        if float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) < 300:  # ~ -40 dBFS
            continue
        score, at = find_whole(piece, heard, rate)
        pieces.append((score, at - start / rate))
    return pieces


def echo_missing(sent: np.ndarray, heard: np.ndarray, rate: int, *,
                 min_correlation: float = 0.9, found: float = 0.8, piece: float = 0.125,
                 within: tuple[float, float] = (-0.5, 1.0)) -> str:
    """What of ``sent`` is missing from ``heard`` (an echo of it, or a recording of it),
    piece by piece: "" when at least ``found`` of the voiced ``piece``-second pieces of
    ``sent`` are each in ``heard`` (normalised correlation above ``min_correlation``),
    each at its own delay within ``within`` seconds of where it was sent; else a report
    of every piece (correlation@delay).

    Not one correlation over the whole call: a jitter buffer that takes up or gives back
    a 20 ms frame during the call (the gateway's and baresip's do when packets come late
    or in a burst on a loaded machine) shifts what follows by 20 ms, which takes a
    whole-call correlation from 0.99 to 0.5-0.8, while here it costs the one piece the
    step falls in. On a loaded machine a call had up to 3 such steps (the delay drifting
    to -57 ms); an eighth of a second is long enough to tell speech from other sound,
    and test_srtp.py's sentence has 22 voiced eighths, so 4 steps get through. On that
    sentence (its test_echo_missing_... measures these) an echo with 2 or 5 steps keeps all 22 and
    20 pieces; silence, noise, another sentence, A-law heard as u-law, 20 ms frames
    swapped in pairs or the speech backwards keep at most 1, every third frame lost keeps
    3. (Every tenth frame lost keeps 20 and passes, as it passed one whole-call
    correlation, at 0.97.)"""
    size = int(piece * rate)
    early, late = int(within[0] * rate), int(within[1] * rate)
    pieces: list[tuple[float, float]] = []
    for start in range(0, sent.size - size + 1, size):
        part = sent[start:start + size]
        if float(np.sqrt(np.mean(part.astype(np.float64) ** 2))) < 300:  # ~ -40 dBFS
            continue
        low = max(0, start + early)
        score, at = find_whole(part, heard[low:start + size + late], rate)
        pieces.append((score, at + (low - start) / rate))
    hits = sum(score > min_correlation for score, _ in pieces)
    if pieces and hits >= found * len(pieces):
        return ""
    report = ", ".join(f"{score:.3f}@{delay * 1000:.0f}ms" for score, delay in pieces)
    return (f"{len(pieces) - hits} of {len(pieces)} voiced {piece:g} s pieces not heard "
            f"(correlation above {min_correlation} needed; correlation@delay: {report})")


def find_whole(needle: np.ndarray, haystack: np.ndarray, rate: int) -> tuple[float, float]:
    """How well `needle` is found whole in `haystack`: the best correlation of the needle
    against each window of its length, normalised by both energies (1.0: an exact copy
    at any gain; a copy with its second half missing: about 0.7), and where (seconds)."""
    a = needle.astype(np.float64)
    b = haystack.astype(np.float64)
    if a.size == 0 or b.size < a.size:
        return 0.0, 0.0
    size = 1 << (a.size + b.size - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    corr = corr[: b.size - a.size + 1]
    energy = np.concatenate([[0.0], np.cumsum(b * b)])
    windows = energy[a.size:] - energy[: b.size - a.size + 1]
    norm = np.sqrt(np.maximum(windows, 1e-9) * float(np.dot(a, a)))
    scores = corr / norm
    i = int(np.argmax(scores))
    return float(scores[i]), i / rate
