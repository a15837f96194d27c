"""Media peers for integration tests, and the measures that judge what they hear.

Everything runs on 127.0.0.1.

- ``make_speech_wav(path, text, rate=8000)``: espeak-ng speech as a mono int16 WAV.
- ``read_wav`` / ``write_wav``: mono int16 WAV files as numpy arrays.
- ``xcorr_delay(sent, received, rate) -> (peak, delay_s)``: normalised
  cross-correlation peak (1.0 for a copy, ~0 for an unrelated signal) and the lag.
- ``active_fraction(samples, rate)``: the share of 20 ms frames that are not silent.
- ``Baresip``: baresip 1.0 run headless in a temporary config directory and
  driven over its ``ctrl_tcp`` socket; ``Baresip.call(uri, play, seconds, dtmf)``
  dials, plays a WAV, optionally sends RFC 4733 digits, hangs up and returns
  what it sent and received as a :class:`BaresipCall`.
- ``SippUas``: SIPp as the called party in the background (the built-in
  ``uas`` with ``-rtp_echo``, or a scenario file).
- ``RtpSink`` and ``telephone_events``: a UDP port that keeps every RTP packet
  it receives, and the RFC 4733 events in them.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import soxr

from tests.integration.conftest import LOOPBACK, find_free_port, sipp_command

Pcm = npt.NDArray[np.int16]

PHONE_RATE = 8000
SPEECH_TEXT = (
    "Thank you for calling. Please say the name of the person you want to reach, "
    "or press one for sales."
)
DTMF_DIGITS = "0123456789*#ABCD"  # RFC 4733 3.2: event codes 0 to 15, in this order
FRAME_MS = 20


# --- WAV files ---------------------------------------------------------------


def read_wav(path: Path) -> tuple[Pcm, int]:
    """A mono 16-bit PCM WAV as (int16 samples, sample rate).

    A data chunk whose size field is 0 or runs past the end of the file (a
    writer killed before it closed the file) is read to the end of the file."""
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    offset, fmt, pcm = 12, None, None
    while offset + 8 <= len(data):
        cid, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", data, body)
        elif cid == b"data":
            end = len(data) if size == 0 or body + size > len(data) else body + size
            pcm = data[body:end]
            break
        offset = body + size + (size & 1)
    if fmt is None or pcm is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    tag, channels, rate, _, _, bits = fmt
    if tag not in (1, 0xFFFE) or bits != 16 or channels != 1:
        raise ValueError(f"{path}: want mono 16-bit PCM, got tag {tag}, {channels} ch, {bits} bit")
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.int16), int(rate)


def write_wav(path: Path, samples: npt.ArrayLike, rate: int) -> None:
    """Write mono int16 samples as a 16-bit PCM WAV."""
    pcm = np.asarray(samples, dtype="<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
        b"data", len(pcm),
    )  # fmt: skip
    path.write_bytes(header + pcm)


def to_int16(samples: npt.ArrayLike) -> Pcm:
    """Float samples on the int16 scale, rounded and clipped."""
    x = np.round(np.asarray(samples, dtype=np.float64))
    return np.clip(x, -32768, 32767).astype(np.int16)


def make_speech_wav(
    path: Path,
    text: str = SPEECH_TEXT,
    rate: int = PHONE_RATE,
    *,
    peak_dbfs: float = -6.0,
    voice: str = "en-us",
) -> Pcm:
    """Speak ``text`` with espeak-ng into ``path``: mono int16 at ``rate``,
    normalised to ``peak_dbfs``. Returns the samples.

    espeak-ng writes 22050 Hz; soxr resamples (its default quality keeps the
    band below 4 kHz intact). Raises FileNotFoundError without espeak-ng."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise FileNotFoundError("espeak-ng is not installed (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            [espeak, "-v", voice, "-s", "160", "-w", str(raw), text],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        speech, espeak_rate = read_wav(raw)
    x = speech.astype(np.float64)
    if espeak_rate != rate:
        x = soxr.resample(x, espeak_rate, rate)
    peak = float(np.max(np.abs(x))) or 1.0
    out = to_int16(x * (32767 * 10 ** (peak_dbfs / 20) / peak))
    write_wav(path, out, rate)
    return out


# --- measures ----------------------------------------------------------------


def xcorr_delay(sent: npt.ArrayLike, received: npt.ArrayLike, rate: int) -> tuple[float, float]:
    """The peak of the normalised cross-correlation of ``received`` against
    ``sent``, and the delay (seconds) at which ``received`` best matches it.

    Both signals have their mean removed; the correlation at each lag is
    divided by sqrt(energy(sent) * energy(received)), so a delayed copy (at
    any gain, with any amount of silence around it) gives 1.0, an unrelated
    signal gives close to 0, and a copy with part of it missing or with noise
    added gives less than 1. The sign is kept: an inverted copy gives -1.0,
    and the peak is the lag of largest magnitude. A positive delay means
    ``received`` lags ``sent``. Computed with one FFT of the padded signals."""
    a = np.asarray(sent, dtype=np.float64)
    b = np.asarray(received, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return 0.0, 0.0
    a = a - a.mean()
    b = b - b.mean()
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if norm == 0.0:
        return 0.0, 0.0
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    # corr[k] = sum_t b[t + k] a[t]; negative lags wrap to the end of the buffer.
    lags = np.concatenate([corr[size - (a.size - 1) :], corr[: b.size]]) / norm
    i = int(np.argmax(np.abs(lags)))
    return float(lags[i]), (i - (a.size - 1)) / rate


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


# --- baresip -----------------------------------------------------------------

BARESIP_MODULES = Path("/usr/lib/baresip/modules")

BARESIP_CONFIG = """\
# baresip 1.0 for sipbridge tests: no sound card, loopback only.
poll_method             epoll
sip_listen              {host}:{sip_port}
net_interface           {host}
call_local_timeout      30
call_max_calls          1

# The caller's voice is a WAV file; what it hears is dumped by sndfile
# (the decode side of the filter chain, before any player). The player is
# aubridge with no matching source: a sink that needs no sound card.
audio_source            aufile,{play}
audio_player            aubridge,sink
audio_alert             aubridge,sink
audio_level             no
ausrc_format            s16
auplay_format           s16
auenc_format            s16
audec_format            s16
jitter_buffer_delay     1-10
rtp_stats               no
rtcp_mux                no

module_path             {modules}
module                  g711.so
module                  aufile.so
module                  aubridge.so
module                  sndfile.so
module_tmp              account.so
module_app              menu.so
module_app              ctrl_tcp.so

snd_path                {dumps}
ctrl_tcp_listen         {host}:{ctrl_port}
statmode_default        off
ringback_disabled       yes
menu_bell               no
"""

# One account that never registers, offering one G.711 law (plus telephone-event,
# which baresip always adds for RFC 4733 digits).
BARESIP_ACCOUNT = (
    "<sip:{user}@{host}>;regint=0;answermode={answermode};ptime=20;audio_codecs={codec}\n"
)


class BaresipError(RuntimeError):
    """baresip did not start, or did not do what it was told; carries its log."""


@dataclass
class BaresipCall:
    """One call placed by :meth:`Baresip.call`.

    ``sent`` is what baresip encoded (sndfile's encode dump) and ``received``
    what it decoded from the peer (the decode dump), both at ``rate``. The
    dumps hold samples only: ``received`` starts with the first packet from
    the peer, so a delay measured on it is the offset within the peer's
    stream, which is the echo latency when the peer sends from the answer on."""

    uri: str
    rate: int
    sent: Pcm
    received: Pcm
    sent_path: Path
    received_path: Path
    established: bool
    close_reason: str
    dtmf_sent: str
    events: list[dict[str, Any]] = field(repr=False)


class Baresip:
    """baresip 1.0, headless, one call at a time, driven over ctrl_tcp.

    ``with Baresip(tmp_path / "baresip") as ua: call = ua.call(uri, wav, 4)``.
    The config directory is ``workdir/config``; ``workdir/baresip.log`` keeps
    its output. Leaving the ``with`` block quits baresip and kills it if it
    does not exit within ``STOP_TIMEOUT``."""

    STOP_TIMEOUT = 3.0
    READY_TIMEOUT = 10.0

    def __init__(
        self, workdir: Path, *, codec: str = "PCMU", user: str = "caller", host: str = LOOPBACK,
        answermode: str = "manual",
    ) -> None:
        if codec.upper() not in ("PCMU", "PCMA"):
            raise ValueError("codec must be PCMU or PCMA")
        self.workdir = workdir
        self.codec = codec.upper()
        self.user = user
        self.host = host
        self.answermode = answermode  # "auto": answers every call (a phone at the target)
        self.config_dir = workdir / "config"
        self.dumps = workdir / "dumps"
        self.play_path = workdir / "play.wav"
        self.log_path = workdir / "baresip.log"
        self.sip_port = 0
        self.ctrl_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._token = 0
        self._calls = 0

    # -- lifecycle --

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def write_config(self) -> None:
        """The config, accounts file and directories baresip needs in ``workdir``."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.dumps.mkdir(parents=True, exist_ok=True)
        # SIP takes the port for UDP and TCP (and port + 1 for TLS where built in).
        self.sip_port = find_free_port(self.host, offsets=(0, 1))
        self.ctrl_port = find_free_port(self.host, udp=False)
        (self.config_dir / "config").write_text(
            BARESIP_CONFIG.format(
                host=self.host,
                sip_port=self.sip_port,
                ctrl_port=self.ctrl_port,
                play=self.play_path,
                modules=BARESIP_MODULES,
                dumps=self.dumps,
            )
        )
        (self.config_dir / "accounts").write_text(
            BARESIP_ACCOUNT.format(user=self.user, host=self.host, codec=self.codec.lower(),
                                   answermode=self.answermode)
        )
        # aufile opens the source when a call's audio starts; until a call
        # writes its own, a short silence keeps a stray start harmless.
        write_wav(self.play_path, np.zeros(PHONE_RATE // 10, np.int16), PHONE_RATE)

    def start(self) -> None:
        """Write the config, start baresip and connect to its control socket."""
        binary = shutil.which("baresip")
        if binary is None:
            raise FileNotFoundError("baresip is not installed (Debian package baresip)")
        self.write_config()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, "-f", str(self.config_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise BaresipError(f"baresip exited with {self.process.returncode}\n{self.log()}")
            try:
                self._sock = socket.create_connection((self.host, self.ctrl_port), timeout=0.2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BaresipError(f"no ctrl_tcp on {self.ctrl_port}\n{self.log()}") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="baresip-ctrl", daemon=True)
        self._reader.start()

    def stop(self) -> int | None:
        """Quit baresip (``quit`` command, then SIGTERM, then SIGKILL); its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None and self._sock is not None:
            try:
                self._send("quit")
                process.wait(self.STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            process.send_signal(sig)
            try:
                process.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                continue
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(1.0)
        return process.returncode

    def log(self) -> str:
        """What baresip printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- ctrl_tcp: JSON in netstrings (baresip modules/ctrl_tcp) --

    def _send(self, command: str, params: str | None = None) -> str:
        if self._sock is None:
            raise BaresipError("baresip is not running")
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))
        return token

    def _read_loop(self) -> None:
        sock, buf = self._sock, b""
        assert sock is not None
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    length, colon, rest = buf.partition(b":")
                    if not colon or len(rest) < int(length) + 1:
                        break
                    self._inbox.put(json.loads(rest[: int(length)]))
                    buf = rest[int(length) + 1 :]
        except (OSError, ValueError):
            pass
        self._inbox.put(None)

    def _next(self, deadline: float) -> dict[str, Any] | None:
        try:
            message = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if message is None:
            raise BaresipError(f"baresip closed its control socket\n{self.log()[-4000:]}")
        if message.get("event"):
            self.events.append(message)
        return message

    def command(self, command: str, params: str | None = None, timeout: float = 5.0) -> str:
        """Run a baresip command (``dial``, ``hangup``, ``sndcode``...); its output."""
        token = self._send(command, params)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._next(deadline)
            if message is not None and message.get("response") and message.get("token") == token:
                if not message.get("ok", False):
                    raise BaresipError(f"{command} {params or ''}: {message.get('data')}")
                return str(message.get("data", ""))
        raise BaresipError(f"no answer to {command} within {timeout:g} s\n{self.log()[-4000:]}")

    def wait_event(
        self, types: Iterable[str], timeout: float, *, since: int = 0
    ) -> dict[str, Any] | None:
        """The first event of one of ``types`` (``CALL_ESTABLISHED``...) at or after
        index ``since`` of :attr:`events`, waiting up to ``timeout``; None if none came."""
        wanted = set(types)
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for event in self.events[seen:]:
                if event.get("type") in wanted:
                    return event
            seen = len(self.events)
            if time.monotonic() >= deadline:
                return None
            self._next(deadline)

    # -- a call --

    def call(
        self,
        uri: str,
        play: Path | npt.ArrayLike,
        seconds: float,
        *,
        dtmf: str = "",
        dtmf_at: float = 0.5,
        dtmf_gap: float = 0.25,
        answer_timeout: float = 10.0,
    ) -> BaresipCall:
        """Dial ``uri``, send ``play`` (a mono 8 kHz WAV or samples) as the
        caller's voice, hang up ``seconds`` after the answer and return what
        was sent and received.

        ``play`` is padded with silence to ``seconds`` + 1 s, since aufile ends
        the call when its file runs out. ``dtmf`` digits are sent one at a time
        (``sndcode``: RFC 4733 when the answer has telephone-event), the first
        ``dtmf_at`` s after the answer, then every ``dtmf_gap`` s."""
        if self.process is None:
            raise BaresipError("baresip is not running")
        self._calls += 1
        samples, rate = read_wav(play) if isinstance(play, Path) else (to_int16(play), PHONE_RATE)
        if rate != PHONE_RATE:
            raise ValueError(f"baresip's aufile wants {PHONE_RATE} Hz, got {rate} Hz")
        padded = np.zeros(max(samples.size, int((seconds + 1.0) * rate)), np.int16)
        padded[: samples.size] = samples
        write_wav(self.play_path, padded, rate)
        for old in self.dumps.glob("dump-*.wav"):
            old.unlink()

        start = len(self.events)
        self.command("dial", uri)
        event = self.wait_event(["CALL_ESTABLISHED", "CALL_CLOSED"], answer_timeout, since=start)
        established = event is not None and event["type"] == "CALL_ESTABLISHED"
        sent_digits = ""
        if established:
            answered = time.monotonic()
            for i, digit in enumerate(dtmf):
                pause = answered + dtmf_at + i * dtmf_gap - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self.command("sndcode", digit)
                sent_digits += digit
            closed = self.wait_event(
                ["CALL_CLOSED"], max(0.0, answered + seconds - time.monotonic()), since=start
            )
            if closed is None:
                self.command("hangup")
        elif event is None:
            self.command("hangup")  # gives up the unanswered INVITE (CANCEL)
        closed = self.wait_event(["CALL_CLOSED"], 5.0, since=start)
        reason = str(closed.get("param", "")) if closed else "(no CALL_CLOSED event)"
        if event is None:
            raise BaresipError(
                f"{uri}: no answer within {answer_timeout:g} s\n{self.log()[-4000:]}"
            )
        return self._collect(uri, established, reason, sent_digits, self.events[start:])

    @property
    def address(self) -> str:
        return f"{self.host}:{self.sip_port}"

    def prepare(self, play: Path | npt.ArrayLike, seconds: float) -> int:
        """Set what an answering baresip (``answermode="auto"``) says in its next call:
        ``play`` padded with silence to ``seconds``. Returns the event index to pass
        to :meth:`answered`."""
        samples, rate = read_wav(play) if isinstance(play, Path) else (to_int16(play), PHONE_RATE)
        padded = np.zeros(max(samples.size, int(seconds * rate)), np.int16)
        padded[: samples.size] = samples
        write_wav(self.play_path, padded, rate)
        for old in self.dumps.glob("dump-*.wav"):
            old.unlink()
        return len(self.events)

    def answered(self, since: int, timeout: float) -> BaresipCall:
        """The call an answering baresip took after :meth:`prepare`, once it has ended."""
        self._calls += 1
        established = self.wait_event(["CALL_ESTABLISHED"], timeout, since=since) is not None
        closed = self.wait_event(["CALL_CLOSED"], timeout, since=since)
        reason = str(closed.get("param", "")) if closed else "(no CALL_CLOSED event)"
        return self._collect("(incoming)", established, reason, "", self.events[since:])

    def _collect(
        self,
        uri: str,
        established: bool,
        reason: str,
        dtmf: str,
        events: list[dict[str, Any]],
    ) -> BaresipCall:
        """Move the call's sndfile dumps to ``callN-sent.wav`` and ``callN-received.wav``."""
        paths = {}
        for side, name in (("enc", "sent"), ("dec", "received")):
            target = self.workdir / f"call{self._calls}-{name}.wav"
            found = sorted(self.dumps.glob(f"dump-*-{side}*.wav"), key=os.path.getmtime)
            if found:
                _wait_wav_closed(found[-1])
                found[-1].replace(target)
            else:
                write_wav(target, np.zeros(0, np.int16), PHONE_RATE)
            paths[name] = target
        sent, rate = read_wav(paths["sent"])
        received, _ = read_wav(paths["received"])
        return BaresipCall(
            uri=uri, rate=rate, sent=sent, received=received,
            sent_path=paths["sent"], received_path=paths["received"],
            established=established, close_reason=reason, dtmf_sent=dtmf, events=events,
        )  # fmt: skip


def _wait_wav_closed(path: Path, timeout: float = 2.0) -> None:
    """Wait until the writer has closed ``path``: libsndfile writes the RIFF
    size when it closes the file, which baresip does as it frees the call,
    just after it reports CALL_CLOSED."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with path.open("rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
        if len(head) == 8 and struct.unpack_from("<I", head, 4)[0] == size - 8:
            return
        time.sleep(0.02)


# --- SIPp as the called party --------------------------------------------------


class SippUas:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(3.0)
            except subprocess.TimeoutExpired:
                continue
        return self.process.returncode

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
